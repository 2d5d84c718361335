from sasr.cli import main

main()
