# Import by the credential's id in Berth's store.
terraform import berth_registry_credential.ghcr rc-0123456789abcdef
