"""Oracle Database: RMAN level 0/1 backups made on the database host over SSH, pieces streamed into the vault,
point-in-time restores to a new instance on a target host."""
