# Resolve a tag to the linux/amd64 digest; a moved tag shows up in the plan.
data "berth_image" "web" {
  image = "ghcr.io/acme/web:1.4"
}

output "web_digest" {
  value = data.berth_image.web.digest
}

output "web_pinned" {
  # e.g. ghcr.io/acme/web@sha256:...
  value = data.berth_image.web.pinned_reference
}
