from edgenet.cli import run

run()
