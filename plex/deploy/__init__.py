"""Deploy: observe what Incus holds, plan the difference, apply it in health-gated waves."""
