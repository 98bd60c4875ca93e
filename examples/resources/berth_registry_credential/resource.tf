# A GitHub Container Registry token with read:packages. With token_wo the
# token never reaches the Terraform state; bump the version to rotate it.
resource "berth_registry_credential" "ghcr" {
  name             = "ghcr-ci"
  registry         = "ghcr.io"
  username         = "acme-bot"
  token_wo         = var.ghcr_token
  token_wo_version = 1
}

variable "ghcr_token" {
  type      = string
  sensitive = true
  ephemeral = true
}
