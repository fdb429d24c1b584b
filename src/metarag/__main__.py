from metarag.cli import main

main()
