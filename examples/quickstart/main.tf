# Quickstart: deploy the demo app from the local registry to the local
# Docker, offline. `make demo` runs `terraform init && terraform apply` here
# after `tests/devenv.sh up` has started Docker and the registry on
# 127.0.0.1:5000 and pushed the demo image.

terraform {
  required_providers {
    berth = {
      source  = "berth/berth"
      version = "~> 0.1"
    }
  }
}

provider "berth" {
  # The ingress (stable ports and domains) from the local registry: the
  # quickstart runs offline. Elsewhere the official HAProxy image is used.
  ingress = {
    image = "127.0.0.1:5000/berth/ingress:local"
  }
}

# What the tag points at right now: the exact linux/amd64 digest.
data "berth_image" "demo" {
  image = "127.0.0.1:5000/berth/demo:v1"
}

resource "berth_app" "demo" {
  name  = "quickstart"
  image = data.berth_image.demo.image

  services = {
    web = {
      http_port   = 8080
      instances   = 2
      public_port = 8088
      health_check = {
        path = "/healthz"
      }
    }
  }
}

output "image" {
  value = provider::berth::normalize_image(data.berth_image.demo.image)
}

output "digest" {
  description = "The linux/amd64 manifest digest deployed."
  value       = berth_app.demo.image_digest
}

output "url" {
  description = "The app's stable address: try `curl URL/`. It keeps answering across releases."
  value       = berth_app.demo.urls["web"][0]
}

output "endpoints" {
  description = "Each instance's own address (new with every release; for debugging)."
  value       = berth_app.demo.endpoints["web"]
}
