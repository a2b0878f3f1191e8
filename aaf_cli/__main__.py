from aaf_cli.cli import main

main()
