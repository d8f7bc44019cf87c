"""What the tests and benchmarks share: a QEMU guest driven over its serial console and QMP
(machine), the manual's reader at an SSH terminal (terminal), the recipes' default accounts
(accounts), disks made from built images (disks), private caches seeded with the locked
packages (seeding) and an App Platform's life of updates and power cuts (lifecycle)."""
