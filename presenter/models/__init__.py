"""Networks: Style-SyncFormer (speech -> mouth motion) and its style encoder; the generator later."""
