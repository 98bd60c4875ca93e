provider "berth" {
  # Registries without TLS (loopback registries never need listing).
  insecure_registries = ["registry.internal:5000"]
}
