# Adopt an app Berth deployed, by its name.
terraform import berth_app.shop shop
