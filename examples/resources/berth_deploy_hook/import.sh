# Import by the hook's id (the dh-… part of its URL's path). Berth keeps only
# a hash of the key, so an imported hook's `url` is null: keep the URL you
# have, or replace the hook to get a new one.
terraform import berth_deploy_hook.ci dh-0123456789abcdef
