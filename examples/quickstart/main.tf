# Quickstart: resolve the demo image in the local registry to the exact
# linux/amd64 digest Berth deploys. `make demo` runs this offline against the
# registry that `tests/devenv.sh up` starts on 127.0.0.1:5000.

terraform {
  required_providers {
    berth = {
      source  = "berth/berth"
      version = "~> 0.1"
    }
  }
}

provider "berth" {}

data "berth_image" "demo" {
  image = "127.0.0.1:5000/berth/demo:v1"
}

output "image" {
  value = provider::berth::normalize_image(data.berth_image.demo.image)
}

output "digest" {
  description = "The linux/amd64 manifest digest Berth deploys."
  value       = data.berth_image.demo.digest
}

output "pinned_reference" {
  value = data.berth_image.demo.pinned_reference
}
