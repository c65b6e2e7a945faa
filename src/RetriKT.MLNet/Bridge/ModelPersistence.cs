using Microsoft.ML;
using Microsoft.ML.Runtime;

namespace RetriKT.MLNet.Bridge;

/// <summary>
/// The identity of one persisted component inside model.zip: an 8-character model signature, format versions and
/// the loader signature that <c>[LoadableClass]</c> registers (<see cref="Loaders"/>). Never change a published
/// signature; bump <see cref="CurrentVersion"/> and keep reading older versions down to <see cref="OldestReadable"/>.
/// </summary>
internal sealed record ModelFormat(string ModelSignature, uint CurrentVersion, uint OldestReadable, string LoaderSignature)
{
    // ML.NET's model header holds an 8-byte model signature and a loader signature of at most 24 characters.
    public string ModelSignature { get; } = ModelSignature.Length == 8 ? ModelSignature
        : throw new ArgumentException($"Model signature '{ModelSignature}' must be exactly 8 characters.");
    public string LoaderSignature { get; } = LoaderSignature.Length is > 0 and <= 24 ? LoaderSignature
        : throw new ArgumentException($"Loader signature '{LoaderSignature}' must be 1 to 24 characters, found {LoaderSignature.Length}.");

    internal VersionInfo ToVersionInfo() => new(ModelSignature, CurrentVersion, CurrentVersion, OldestReadable,
        loaderAssemblyName: typeof(ModelFormat).Assembly.FullName, loaderSignature: LoaderSignature);
}

/// <summary>Writes one component into its model.zip directory (wraps ML.NET's internal <c>ModelSaveContext</c> API).</summary>
internal sealed class ModelWriter
{
    private readonly ModelSaveContext _ctx;
    private ModelWriter(ModelSaveContext ctx) => _ctx = ctx;

    /// <summary>Entry point for <c>ICanSaveModel.Save</c>: stamps the format, then lets the component write its state.</summary>
    public static void Save(ModelSaveContext ctx, ModelFormat format, Action<ModelWriter> write)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ctx.CheckAtModel();
        ctx.SetVersionInfo(format.ToVersionInfo());
        write(new ModelWriter(ctx));
    }

    /// <summary>The component's main stream (<c>Model.key</c>).</summary>
    public BinaryWriter Writer => _ctx.Writer;

    public void WriteString(string value) => _ctx.SaveNonEmptyString(value);
    public void WriteStringOrNull(string? value) => _ctx.SaveStringOrNull(value);

    /// <summary>A named side stream in the component's directory (large binary state: weights, vectors).</summary>
    public void WriteStream(string name, Action<BinaryWriter> write) => _ctx.SaveBinaryStream(name, write);

    /// <summary>A nested ML.NET model (for example a transformer this one owns) in sub-directory <paramref name="name"/>.</summary>
    public void WriteModel(ITransformer model, string name) => _ctx.SaveModel(model, name);
}

/// <summary>Reads one component from model.zip (wraps ML.NET's internal <c>ModelLoadContext</c>).</summary>
internal sealed class ModelReader
{
    private readonly ModelLoadContext _ctx;
    private readonly ModelFormat _format;

    private ModelReader(IHostEnvironment env, ModelLoadContext ctx, ModelFormat format)
    {
        Environment = env;
        _ctx = ctx;
        _format = format;
    }

    /// <summary>Checks the stored format against <paramref name="format"/> (ML.NET throws a clear version error).</summary>
    public static ModelReader Open(IHostEnvironment env, ModelLoadContext ctx, ModelFormat format)
    {
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(ctx);
        ctx.CheckAtModel(format.ToVersionInfo());
        return new ModelReader(env, ctx, format);
    }

    public IHostEnvironment Environment { get; }

    /// <summary>The format version the stored component was written with.</summary>
    public uint Version => _ctx.Header.ModelVerWritten;

    public BinaryReader Reader => _ctx.Reader;

    public string ReadString() => _ctx.LoadNonEmptyString();
    public string? ReadStringOrNull() => _ctx.LoadStringOrNull();

    /// <summary>Reads a named side stream; a missing stream is a corrupt model and throws naming it.</summary>
    public void ReadStream(string name, Action<BinaryReader> read)
    {
        if (!_ctx.TryLoadBinaryStream(name, read))
            throw new InvalidDataException($"model.zip is missing stream '{name}' of component '{_format.LoaderSignature}'.");
    }

    public bool TryReadStream(string name, Action<BinaryReader> read) => _ctx.TryLoadBinaryStream(name, read);

    /// <summary>Loads a nested model written with <see cref="ModelWriter.WriteModel"/>.</summary>
    public T ReadModel<T>(string name) where T : class, ITransformer
    {
        _ctx.LoadModel<ITransformer, SignatureLoadModel>(Environment, out var model, name);
        return model as T ?? throw new InvalidDataException(
            $"model.zip entry '{name}' holds a {model?.GetType().Name ?? "null"}, expected {typeof(T).Name}.");
    }
}
