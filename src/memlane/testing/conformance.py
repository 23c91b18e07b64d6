class StoreConformance:
    pass
