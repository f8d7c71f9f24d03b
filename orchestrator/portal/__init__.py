"""The client portal and technician console (`dobaas portal serve`): browse and restore by date, restore requests,
incident tickets, over the catalog's database and the same restore code as the command line."""
