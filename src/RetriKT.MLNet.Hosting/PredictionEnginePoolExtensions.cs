namespace RetriKT.MLNet.Hosting;

/// <summary>Rent, predict, return in one call.</summary>
public static class PredictionEnginePoolExtensions
{
    /// <summary>Predicts with the default model.</summary>
    public static TPrediction Predict<TData, TPrediction>(this PredictionEnginePool<TData, TPrediction> pool, TData example)
        where TData : class
        where TPrediction : class, new()
    {
        ArgumentNullException.ThrowIfNull(pool);
        var engine = pool.GetPredictionEngine();
        try
        {
            return engine.Predict(example);
        }
        finally
        {
            pool.ReturnPredictionEngine(engine);
        }
    }

    /// <summary>Predicts with the model named <paramref name="modelName"/>.</summary>
    public static TPrediction Predict<TData, TPrediction>(this PredictionEnginePool<TData, TPrediction> pool, string modelName, TData example)
        where TData : class
        where TPrediction : class, new()
    {
        ArgumentNullException.ThrowIfNull(pool);
        var engine = pool.GetPredictionEngine(modelName);
        try
        {
            return engine.Predict(example);
        }
        finally
        {
            pool.ReturnPredictionEngine(modelName, engine);
        }
    }
}
