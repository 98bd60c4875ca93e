output "normalized" {
  # "docker.io/library/nginx:latest"
  value = provider::berth::normalize_image("nginx")
}
