-- Test fixture: a broken edit (returns no service table).
return "lua-live"
