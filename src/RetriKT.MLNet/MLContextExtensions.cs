using RetriKT.MLNet;

// ML.NET's convention: catalog extensions live in Microsoft.ML, so `using Microsoft.ML;` alone reaches them.
namespace Microsoft.ML;

/// <summary>Catalog extension methods on <see cref="MLContext"/>.</summary>
public static class MLContextExtensions
{
    /// <summary>RetriKT's estimators for this context.</summary>
    public static RetriKTCatalog RetriKT(this MLContext mlContext)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        return new RetriKTCatalog(mlContext);
    }
}
