from stk.cli import main

main()
