"""Server-side tools the run loop calls: code_interpreter (``tools.sandbox``), function, file_search."""
