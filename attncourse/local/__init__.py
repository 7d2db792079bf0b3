"""Part V: local attention (windows, outlooks, contexts, decays). Its modules are registered with
the chapters that derive them; until then they are imported from their files."""
