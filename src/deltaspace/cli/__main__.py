from deltaspace.cli import main

main()
