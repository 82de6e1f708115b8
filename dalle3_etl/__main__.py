from dalle3_etl.cli import main

main()
