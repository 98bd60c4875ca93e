# A web service and a worker from one image. `terraform plan` shows
# image_digest change when the tag moves; apply rolls out with no downtime.
resource "berth_app" "shop" {
  name                   = "shop"
  image                  = "ghcr.io/acme/shop:1.4"
  registry_credential_id = berth_registry_credential.ghcr.id

  env = {
    LOG_LEVEL = "info"
  }
  secret_env_wo = {
    DATABASE_URL = var.database_url
  }
  secret_env_wo_version = 1

  # Runs once per release, from the new image, before traffic moves.
  pre_deploy_command = "./manage migrate"

  services = {
    web = {
      http_port = 8080
      instances = 2
      health_check = {
        path = "/healthz"
      }
      memory_mb = 512
      cpus      = 0.5
    }
  }

  workers = {
    queue = {
      command   = "./manage worker"
      instances = 1
    }
  }
}

output "shop_endpoints" {
  value = berth_app.shop.endpoints["web"]
}

variable "database_url" {
  type      = string
  sensitive = true
  ephemeral = true
}
