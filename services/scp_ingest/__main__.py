from services.scp_ingest.app import main

main()
