using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;

namespace RetriKT.MLNet.Bridge;

/// <summary>Host settings ML.NET keeps internal: device id, CPU fallback and seed of an <see cref="IHostEnvironment"/>.</summary>
internal readonly record struct HostSettings(int? GpuDeviceId, bool FallbackToCpu, int? Seed, string? TempFilePath);

/// <summary>Reads what catalogs and host environments keep internal.</summary>
internal static class MlNetEnvironment
{
    /// <summary>The environment behind a catalog (<c>CatalogUtils.GetEnvironment</c> is internal).</summary>
    public static IHostEnvironment Of(TransformsCatalog catalog) => CatalogUtils.GetEnvironment(catalog);

    /// <inheritdoc cref="Of(TransformsCatalog)"/>
    public static IHostEnvironment Of(MulticlassClassificationCatalog.MulticlassClassificationTrainers catalog)
        => CatalogUtils.GetEnvironment(catalog);

    /// <summary>GpuDeviceId / FallbackToCpu / Seed as set on the MLContext (public there, internal on the interface).</summary>
    public static HostSettings Settings(IHostEnvironment env) => env is IHostEnvironmentInternal internalEnv
        ? new HostSettings(internalEnv.GpuDeviceId, internalEnv.FallbackToCpu, internalEnv.Seed, internalEnv.TempFilePath)
        : new HostSettings(null, true, null, null);

    /// <summary>Throws <see cref="OperationCanceledException"/> once <c>MLContext.CancelExecution()</c> was called.</summary>
    public static void CheckAlive(IHost host) => host.CheckAlive();

    /// <summary>
    /// <c>MLContext.CancelExecution()</c> is an explicit implementation of the internal <c>ICancelable</c>, so users
    /// cannot call it; RetriKT components take a <see cref="CancellationToken"/> instead. Kept for tests and for
    /// hosts (such as AutoML) that cancel a context.
    /// </summary>
    public static void CancelExecution(MLContext mlContext) => mlContext.CancelExecution();
}

/// <summary><c>SchemaShape.Column</c>'s constructor is internal; estimators need it for <c>GetOutputSchema</c>.</summary>
internal static class SchemaShapes
{
    public static SchemaShape.Column Scalar(string name, DataViewType itemType, bool isKey = false, SchemaShape? annotations = null)
        => new(name, SchemaShape.Column.VectorKind.Scalar, itemType, isKey, annotations);

    public static SchemaShape.Column Vector(string name, DataViewType itemType, bool variableSize = false, bool isKey = false, SchemaShape? annotations = null)
        => new(name, variableSize ? SchemaShape.Column.VectorKind.VariableVector : SchemaShape.Column.VectorKind.Vector, itemType, isKey, annotations);

    /// <summary>Annotation shape (for example <c>KeyValues</c>, <c>SlotNames</c>) attached to an output column.</summary>
    public static SchemaShape Annotations(params SchemaShape.Column[] columns) => new(columns);

    /// <summary>The shape of a schema (<c>SchemaShape.Create</c> is internal): Fit checks its input with the code GetOutputSchema uses.</summary>
    public static SchemaShape Of(DataViewSchema schema) => SchemaShape.Create(schema);
}
