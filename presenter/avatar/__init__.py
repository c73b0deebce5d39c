"""Avatar packs: everything the live server and offline tools need for one face."""
