"""The `kd` command: the composition root. It is the one package that imports the core (kd/) and its plugins
(export/, bench/); none of them imports it. Each verb imports only what it uses, so `kd --help` and a config
error start no inference engine."""
