from drover_operator.cli import main

main()
