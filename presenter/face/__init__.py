"""Face pipeline: landmarks -> smoothing -> fitted mesh -> alignment -> masks -> guidance raster."""
