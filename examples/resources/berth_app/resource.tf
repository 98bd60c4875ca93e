# A web service, an API on the same domain, and a worker from one image.
# `terraform plan` shows image_digest change when the tag moves; apply rolls
# out with no failed request: the ingress on each host switches the stable
# addresses (public_port, domains) to the new instances.
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
  # After the release serves (a failure warns, the release stays), and
  # after a failed deploy was rolled back (the reason in BERTH_DEPLOY_ERROR).
  post_deploy_command   = "./manage warm-cache"
  failed_deploy_command = "./manage notify-failure"

  services = {
    web = {
      http_port   = 8080
      instances   = 2
      public_port = 8000
      domains     = ["shop.example.com"]
      health_check = {
        path = "/healthz"
      }
      memory_mb = 512
      cpus      = 0.5
    }
    api = {
      command            = "./manage api"
      domains            = ["shop.example.com"]
      routes             = ["/api"]
      strip_route_prefix = true
      drain_seconds      = 60
    }
  }

  workers = {
    queue = {
      command   = "./manage worker"
      instances = 1
    }
  }

  # Run by `berth serve` from the current release's digest, with the app's
  # env and secrets; `berth runs shop nightly-report` lists the runs.
  jobs = {
    nightly-report = {
      command         = "./manage report --yesterday"
      schedule        = "30 3 * * *"
      time_zone       = "Europe/Berlin"
      timeout_seconds = 1800
    }
    # No schedule: runs only with `berth run shop reindex`.
    reindex = {
      command = "./manage reindex"
    }
  }
}

output "shop_urls" {
  # { web = ["http://HOST:8000", "https://shop.example.com"], api = ["https://shop.example.com/api"] }
  value = berth_app.shop.urls
}

variable "database_url" {
  type      = string
  sensitive = true
  ephemeral = true
}
