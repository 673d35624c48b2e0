from services.exporter.app import main

main()
