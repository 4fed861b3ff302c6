"""The only code that talks to the outside world: Incus (pylxd), Packer, Docker, subprocess."""
