from services.anonymizer_worker.app import main

main()
