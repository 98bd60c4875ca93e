# A deploy hook for the app in the berth_app example. CI calls its URL after
# pushing the image: the app's tag is resolved again and deployed.
#
#   curl -fsS -X POST "$DEPLOY_HOOK_URL"
#   curl -fsS -X POST "$DEPLOY_HOOK_URL&imgURL=$(jq -rn --arg r "$IMAGE" '$r|@uri')"
resource "berth_deploy_hook" "ci" {
  app      = berth_app.shop.name
  base_url = "https://deploy.example.com"

  # Change a value to issue a new key; create_before_destroy keeps the old
  # URL working until the new one is in place.
  keepers = { rotated = "2026-12" }

  lifecycle {
    create_before_destroy = true
  }
}

# Hand the URL to CI as a secret, e.g. with a CI provider's secret resource.
output "deploy_hook_url" {
  value     = berth_deploy_hook.ci.url
  sensitive = true
}
