provider "berth" {
  # Registries without TLS (loopback registries never need listing).
  insecure_registries = ["registry.internal:5000"]

  hosts = {
    web-1 = { address = "ssh://deploy@10.0.0.11", publish_address = "0.0.0.0" }
    web-2 = { address = "ssh://deploy@10.0.0.12", publish_address = "0.0.0.0" }
  }

  # Stable ports and domains. Certificates come from Let's Encrypt.
  ingress = {
    acme_email = "ops@example.com"
  }
}
