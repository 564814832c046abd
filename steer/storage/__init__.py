"""Everything steer persists, behind one seam: the database, its one migration list, and the SQL of
each table."""
