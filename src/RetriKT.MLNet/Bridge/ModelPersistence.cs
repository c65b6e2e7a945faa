using System.Text;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Common;

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

    /// <summary>
    /// The assembly that registers this component's <c>[LoadableClass]</c> loader; ML.NET loads it by the name stored
    /// in model.zip before looking the loader up. Default: this runtime assembly. Components of the training
    /// assembly name theirs, so a model that holds them loads the training assembly by itself.
    /// </summary>
    public System.Reflection.Assembly LoaderAssembly { get; init; } = typeof(ModelFormat).Assembly;

    // The loader assembly is named without its version: ML.NET loads the stored name, so a full name (Version=0.1.0.0)
    // made a model saved by one RetriKT.MLNet release unloadable by an earlier one ("Could not load file or assembly"),
    // whatever its format version. Which files a release reads is the format version's decision, checked by ModelReader.
    internal VersionInfo ToVersionInfo() => new(ModelSignature, CurrentVersion, CurrentVersion, OldestReadable,
        loaderAssemblyName: LoaderAssembly.GetName().Name, loaderSignature: LoaderSignature);
}

/// <summary>
/// Writes one component into its model.zip directory (wraps ML.NET's internal <c>ModelSaveContext</c> API). Every
/// byte goes through a checksum; the lengths and checksums of all parts are written last (<see cref="PartChecksums"/>).
/// </summary>
internal sealed class ModelWriter
{
    private readonly ModelSaveContext _ctx;
    private readonly ChecksumStream _body;
    private readonly PartChecksums _checksums = new();

    private ModelWriter(ModelSaveContext ctx)
    {
        _ctx = ctx;
        // The body passes through unchanged to Model.key; ML.NET's BinaryWriter does not buffer, so writing past it is safe.
        _body = new ChecksumStream(ctx.Writer.BaseStream, writing: true);
        Writer = new BinaryWriter(_body, Encoding.UTF8, leaveOpen: true);
    }

    /// <summary>Entry point for <c>ICanSaveModel.Save</c>: stamps the format, lets the component write its state, then the checksums.</summary>
    public static void Save(ModelSaveContext ctx, ModelFormat format, Action<ModelWriter> write)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ctx.CheckAtModel();
        ctx.SetVersionInfo(format.ToVersionInfo());
        var writer = new ModelWriter(ctx);
        write(writer);
        writer.Writer.Flush();
        writer._checksums.Add(PartChecksums.BodyPart, writer._body.Count, writer._body.Hash);
        var (length, hash) = PartChecksums.OfStrings(ctx.Strings.OrderBy(s => s.Id).Select(s => s.Value.ToString()));
        writer._checksums.Add(PartChecksums.StringsPart, length, hash);
        writer._checksums.AddVersion(format.CurrentVersion, format.CurrentVersion);
        ctx.SaveBinaryStream(PartChecksums.StreamName, writer._checksums.Write);
    }

    /// <summary>The component's main stream (<c>Model.key</c>).</summary>
    public BinaryWriter Writer { get; }

    // Same encoding as ML.NET's SaveNonEmptyString/SaveStringOrNull (an id into the string table), through the checksum.
    public void WriteString(string value)
    {
        ArgumentException.ThrowIfNullOrEmpty(value);
        Writer.Write(_ctx.Strings.Add(value).Id);
    }

    public void WriteStringOrNull(string? value) => Writer.Write(value is null ? -1 : _ctx.Strings.Add(value).Id);

    /// <summary>A named side stream in the component's directory (large binary state: weights, vectors).</summary>
    public void WriteStream(string name, Action<BinaryWriter> write) => _ctx.SaveBinaryStream(name, output =>
    {
        var checksum = new ChecksumStream(output.BaseStream, writing: true);
        using (var w = new BinaryWriter(checksum, Encoding.UTF8, leaveOpen: true))
        {
            write(w);
            w.Flush();
        }
        _checksums.Add(name, checksum.Count, checksum.Hash);
    });

    /// <summary>A nested ML.NET model (for example a transformer this one owns) in sub-directory <paramref name="name"/>.</summary>
    public void WriteModel(ITransformer model, string name) => _ctx.SaveModel(model, name);
}

/// <summary>
/// Reads one component from model.zip (wraps ML.NET's internal <c>ModelLoadContext</c>). Each part is verified
/// against its length and checksum (<see cref="PartChecksums"/>) before the component parses it; a failed check, or
/// a parse error, throws an <see cref="InvalidDataException"/> that names the part.
/// </summary>
internal sealed class ModelReader
{
    private readonly ModelLoadContext _ctx;
    private readonly ModelFormat _format;
    private readonly PartChecksums _checksums;

    private ModelReader(IHostEnvironment env, ModelLoadContext ctx, ModelFormat format)
    {
        Environment = env;
        _ctx = ctx;
        _format = format;
        _checksums = PartChecksums.Read(ReadPart(PartChecksums.StreamName)?.ToArray()
            ?? throw PartChecksums.Damaged(Where(PartChecksums.StreamName), "it is missing (the model was damaged, or written by a RetriKT.MLNet " +
                "version without checksums: save it again)"), Where(PartChecksums.StreamName));

        // The header's version decides how the body is read, so it is checked with the body.
        _checksums.VerifyVersion(ctx.Header.ModelVerWritten, ctx.Header.ModelVerReadable, Where(PartChecksums.VersionPart));
        // The body of Model.key is read whole and verified before anything in it is trusted.
        long length = ctx.Header.CbModel;
        if (length != _checksums.ExpectedLength(PartChecksums.BodyPart))
            throw PartChecksums.Damaged(Where(PartChecksums.BodyPart), $"its body holds {length} bytes, expected {_checksums.ExpectedLength(PartChecksums.BodyPart)}");
        var body = new byte[length];
        ctx.Reader.BaseStream.ReadExactly(body);
        var (bodyLength, bodyHash) = ChecksumStream.Of(body);
        _checksums.Verify(PartChecksums.BodyPart, bodyLength, bodyHash, Where(PartChecksums.BodyPart));
        var (stringsLength, stringsHash) = PartChecksums.OfStrings(ctx.Strings ?? []);
        _checksums.Verify(PartChecksums.StringsPart, stringsLength, stringsHash, Where(PartChecksums.StringsPart));
        Reader = new BinaryReader(new MemoryStream(body, writable: false), Encoding.UTF8);
    }

    /// <summary>
    /// Checks the stored format against <paramref name="format"/> and verifies the checksums. A version this library
    /// cannot read fails here, in one line naming the component and both versions: ML.NET's own check reports it as
    /// "Error during class instantiation" around a message in decimal that names neither.
    /// </summary>
    public static ModelReader Open(IHostEnvironment env, ModelLoadContext ctx, ModelFormat format)
    {
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(ctx);
        ctx.CheckAtModel();
        var version = format.ToVersionInfo();
        var header = ctx.Header;
        if (header.ModelSignature == version.ModelSignature)
        {
            string where = Where(ctx, PartChecksums.BodyPart);
            if (header.ModelVerReadable > format.CurrentVersion)
                throw PartChecksums.Unreadable(where, $"{format.LoaderSignature} format version {header.ModelVerWritten:x8} (readable from " +
                    $"{header.ModelVerReadable:x8}) is newer than this RetriKT.MLNet reads ({format.OldestReadable:x8} to {format.CurrentVersion:x8}): " +
                    "load it with the RetriKT.MLNet version that saved it, or a later one");
            if (header.ModelVerWritten < format.OldestReadable)
                throw PartChecksums.Unreadable(where, $"{format.LoaderSignature} format version {header.ModelVerWritten:x8} is older than this " +
                    $"RetriKT.MLNet reads ({format.OldestReadable:x8} to {format.CurrentVersion:x8})");
        }
        ctx.CheckAtModel(version);
        return new ModelReader(env, ctx, format);
    }

    public IHostEnvironment Environment { get; }

    /// <summary>The format version the stored component was written with.</summary>
    public uint Version => _ctx.Header.ModelVerWritten;

    /// <summary>The verified body of the component's main stream (<c>Model.key</c>).</summary>
    public BinaryReader Reader { get; }

    public string ReadString()
    {
        var value = ReadStringOrNull();
        return string.IsNullOrEmpty(value) ? throw PartChecksums.Damaged(Where(PartChecksums.BodyPart), "a required string is empty") : value;
    }

    public string? ReadStringOrNull()
    {
        int id = Reader.ReadInt32();
        var strings = _ctx.Strings ?? [];
        if (id < -1 || id >= strings.Length)
            throw PartChecksums.Damaged(Where(PartChecksums.BodyPart), $"string id {id} is outside the string table of {strings.Length}");
        return id == -1 ? null : strings[id];
    }

    /// <summary>Reads a named side stream after verifying it; a missing or damaged stream throws naming it.</summary>
    public void ReadStream(string name, Action<BinaryReader> read)
    {
        using var part = ReadPart(name);
        if (part is null)
        {
            // A stream the checksums list but the zip lacks was removed or renamed: damage, not an optional part.
            if (_checksums.ExpectedLength(name) >= 0) throw PartChecksums.Damaged(Where(name), "it is missing from the zip");
            throw PartChecksums.Damaged(Where(name), $"it is missing from component '{_format.LoaderSignature}'");
        }
        _checksums.Verify(name, part.Length, part.Hash, Where(name));
        using var reader = new BinaryReader(part, Encoding.UTF8, leaveOpen: true);
        try { read(reader); }
        catch (Exception e) when (e is EndOfStreamException or IOException or FormatException or ArgumentException or OverflowException
                                  or IndexOutOfRangeException or InvalidOperationException && e is not InvalidDataException)
        {
            // Verified bytes that still do not parse: written by a different format, never echoed (they may be binary).
            throw PartChecksums.Damaged(Where(name), $"{e.GetType().Name} while reading it");
        }
    }

    /// <summary>
    /// A side stream's bytes with their length and checksum (in blocks: a part may pass 2 GiB), or null when the zip has
    /// none of that name; zip/deflate errors name the part.
    /// </summary>
    private BlockMemoryStream? ReadPart(string name)
    {
        BlockMemoryStream? bytes = null;
        try
        {
            _ctx.TryLoadBinaryStream(name, r => bytes = BlockMemoryStream.CopyOf(r.BaseStream));
        }
        catch (Exception e) when (e is InvalidDataException or IOException)
        {
            throw PartChecksums.Damaged(Where(name), $"the zip entry cannot be read ({e.GetType().Name})");
        }
        return bytes;
    }

    /// <summary>The part's path inside model.zip.</summary>
    private string Where(string part) => Where(_ctx, part);

    private static string Where(ModelLoadContext ctx, string part) => ctx.Directory is { Length: > 0 } dir ? $"{dir}/{part}" : part;

    /// <summary>Loads a nested model written with <see cref="ModelWriter.WriteModel"/>.</summary>
    public T ReadModel<T>(string name) where T : class, ITransformer
    {
        _ctx.LoadModel<ITransformer, SignatureLoadModel>(Environment, out var model, name);
        return model as T ?? throw new InvalidDataException(
            $"model.zip entry '{name}' holds a {model?.GetType().Name ?? "null"}, expected {typeof(T).Name}.");
    }
}
