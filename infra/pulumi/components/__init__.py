"""Components of the Pulumi program: the Hetzner box, cloud-init, kubeconfig, platform."""
