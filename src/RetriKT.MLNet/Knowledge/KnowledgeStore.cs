using System.Globalization;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using RetriKT.MLNet.Common;

namespace RetriKT.MLNet.Knowledge;

/// <summary>Bounds applied when reading a store, so a tampered file fails fast instead of allocating huge buffers.</summary>
public sealed record StoreReadLimits
{
    /// <summary>Largest entry count accepted. Default 50 million.</summary>
    public int MaxEntries { get; init; } = 50_000_000;
    /// <summary>Largest label count accepted. Default 10,000.</summary>
    public int MaxLabels { get; init; } = 10_000;
    /// <summary>Largest embedding dimension accepted. Default 65,536.</summary>
    public int MaxDimension { get; init; } = 65_536;
    /// <summary>Largest single string (UTF-8 bytes). Default 1 MiB.</summary>
    public int MaxStringBytes { get; init; } = 1 << 20;
    /// <summary>The default limits.</summary>
    public static StoreReadLimits Default { get; } = new();

    /// <summary>
    /// Limits for a store that is a verified model.zip part of <paramref name="length"/> bytes: whatever the library wrote
    /// must load again (a store of more than <see cref="MaxLabels"/> labels, or with a text longer than
    /// <see cref="MaxStringBytes"/>, saves, and a model.zip offers no way to raise the limits), and every size is still
    /// bounded by the bytes present, which are checked before anything is allocated.
    /// </summary>
    internal static StoreReadLimits ForPart(long length) => new()
    {
        MaxEntries = int.MaxValue, MaxLabels = int.MaxValue, MaxDimension = int.MaxValue,
        MaxStringBytes = (int)Math.Clamp(length, 0, int.MaxValue),
    };
}

/// <summary>
/// The knowledge store RetriKT's student carries instead of the LLM: labelled entries with the teacher's soft labels,
/// optional texts, and optional embeddings (row-major <c>Count × Dimension</c>, unit length) produced by an
/// <see cref="IStoreEncoder"/>, with that encoder's fingerprint when it has one (<see cref="EncoderFingerprint"/>).
/// Immutable; "With…" methods return new stores. The store keeps its own copy of every soft label (each
/// <see cref="KnowledgeEntry"/> owns a copy of the array it was given), so saving, retrieval and
/// <see cref="Entries"/> agree whatever the caller does later with its arrays.
/// </summary>
/// <remarks>
/// Binary format (little-endian), version 1: magic <c>RKTSTORE</c>, u32 version, u32 flags (1 = texts, 2 =
/// embeddings), i32 count, i32 labelCount, i32 dimension, label names, then per entry i32 label, u8 source, f32
/// fidelity, labelCount × f32 soft label; then texts (if flagged), then embeddings (if flagged); last a u64 FNV-1a
/// checksum of everything before it. Version 2 adds, after the label names, the encoder fingerprint (a string: i32
/// UTF-8 length, −1 for none, then the bytes); a store without a fingerprint is written as version 1, byte for byte
/// what earlier versions wrote, and a version 1 file reads as a store whose encoder is unknown. Written atomically
/// (temp file + rename); reads are bounded and validated.
/// </remarks>
public sealed class KnowledgeStore
{
    private const string Magic = "RKTSTORE";
    /// <summary>Newest format version this library writes and reads (it writes 1 for a store without an encoder fingerprint, and reads both).</summary>
    public const uint FormatVersion = 2;
    private const uint FingerprintVersion = 2;
    private const uint FlagTexts = 1, FlagEmbeddings = 2;

    private readonly KnowledgeEntry[] _entries;
    private readonly float[] _softLabels;
    private readonly float[]? _embeddings;

    /// <summary>Creates a store over <paramref name="labelNames"/> (label index = position) and validated entries.</summary>
    public KnowledgeStore(IReadOnlyList<string> labelNames, IEnumerable<KnowledgeEntry> entries)
        : this(labelNames, entries.ToArray(), null, 0, null) { }

    private KnowledgeStore(IReadOnlyList<string> labelNames, KnowledgeEntry[] entries, float[]? embeddings, int dimension, string? encoderFingerprint)
    {
        ArgumentNullException.ThrowIfNull(labelNames);
        if (labelNames.Count < 2) throw new ArgumentException($"A knowledge store needs at least 2 labels, found {labelNames.Count}.", nameof(labelNames));
        var distinct = new HashSet<string>(StringComparer.Ordinal);
        foreach (var name in labelNames)
            if (string.IsNullOrEmpty(name) || !distinct.Add(name))
                throw new ArgumentException($"Label names must be non-empty and distinct; '{name}' is not.", nameof(labelNames));
        LabelNames = labelNames.ToArray();
        int k = LabelNames.Count;
        _softLabels = new float[entries.Length * k];
        for (int i = 0; i < entries.Length; i++)
        {
            var e = entries[i] ?? throw new ArgumentException($"Entry {i} is null.");
            if (EntryError(e, k) is { } error) throw new ArgumentException($"Entry {i}: {error}");
            e.SoftLabel.CopyTo(_softLabels, i * k);
        }
        _entries = entries;
        if (embeddings is not null)
        {
            if (dimension <= 0) throw new ArgumentException($"Embedding dimension must be positive, found {dimension}.");
            if (embeddings.Length != entries.Length * dimension)
                throw new ArgumentException($"Embeddings hold {embeddings.Length} values, expected {entries.Length} × {dimension}.");
            for (int i = 0; i < entries.Length; i++)
            {
                var row = embeddings.AsSpan(i * dimension, dimension);
                foreach (var x in row)
                    if (!float.IsFinite(x)) throw new ArgumentException($"Entry {i}: embedding holds {x} (NaN or infinite).");
            }
        }
        _embeddings = embeddings;
        Dimension = embeddings is null ? 0 : dimension;
        if (encoderFingerprint is not null && (embeddings is null || encoderFingerprint.Length == 0 || encoderFingerprint.Any(char.IsWhiteSpace)))
            throw new ArgumentException(embeddings is null
                ? $"An encoder fingerprint ('{encoderFingerprint}') needs embeddings; this store has none."
                : $"An encoder fingerprint must be non-empty and without white space, found '{encoderFingerprint}'.");
        EncoderFingerprint = encoderFingerprint;
    }

    /// <summary>What is wrong with <paramref name="e"/> in a store of <paramref name="k"/> labels, or null.</summary>
    private static string? EntryError(KnowledgeEntry e, int k)
    {
        if ((uint)e.Label >= (uint)k) return $"label index {e.Label} is outside [0, {k}).";
        if (SoftLabelError(e.SoftLabel, k) is { } error) return error;
        if (!float.IsFinite(e.Fidelity)) return $"fidelity is {e.Fidelity}.";
        return null;
    }

    /// <summary>
    /// What keeps <paramref name="softLabel"/> from being a soft label of a store of <paramref name="k"/> labels (a value
    /// per label, each finite and >= 0, summing to 1), or null. Also asked where soft labels are made (a teacher's scores,
    /// a checkpoint's lines), so a broken one is named there instead of as an entry index of the store built later.
    /// </summary>
    internal static string? SoftLabelError(float[]? softLabel, int k)
    {
        if (softLabel is null || softLabel.Length != k) return $"soft label has {softLabel?.Length ?? 0} values, expected {k} (one per label).";
        double sum = 0;
        foreach (var p in softLabel)
        {
            if (!float.IsFinite(p) || p < 0) return $"soft label holds {p}; probabilities must be finite and >= 0.";
            sum += p;
        }
        if (Math.Abs(sum - 1) > 1e-3) return $"soft label sums to {sum:G6}, expected 1.";
        return null;
    }

    /// <summary>A soft label's values for a message beside <see cref="SoftLabelError"/>, as they round-trip ("0.25, NaN").</summary>
    internal static string SoftLabelText(float[] softLabel) => string.Join(", ", softLabel.Select(p => p.ToString("R", CultureInfo.InvariantCulture)));

    /// <summary>Label names; a label index is a position in this list.</summary>
    public IReadOnlyList<string> LabelNames { get; }
    /// <summary>Number of labels.</summary>
    public int LabelCount => LabelNames.Count;
    /// <summary>Number of entries.</summary>
    public int Count => _entries.Length;
    /// <summary>Embedding dimension, 0 when the store has no embeddings yet.</summary>
    public int Dimension { get; }
    /// <summary>Whether embeddings are present.</summary>
    public bool HasEmbeddings => _embeddings is not null;
    /// <summary>
    /// The <see cref="IStoreEncoder.Fingerprint"/> of the encoder that produced the embeddings, or null when unknown:
    /// no embeddings, embeddings given as numbers without a fingerprint, an encoder without one, or a file written before
    /// format version 2. The knowledge retriever compares it with the query encoder's (<see cref="EncoderProvenance"/>);
    /// unknown on either side means no check.
    /// </summary>
    public string? EncoderFingerprint { get; }
    /// <summary>Whether texts are present (a store saved without texts has null texts).</summary>
    public bool HasTexts => _entries.Length == 0 || _entries.Any(e => e.Text is not null);
    /// <summary>The entries.</summary>
    public IReadOnlyList<KnowledgeEntry> Entries => _entries;
    /// <summary>Soft labels, row-major <c>Count × LabelCount</c>.</summary>
    public ReadOnlyMemory<float> SoftLabels => _softLabels;
    /// <summary>Embeddings, row-major <c>Count × Dimension</c> (empty when absent).</summary>
    public ReadOnlyMemory<float> Embeddings => _embeddings ?? [];

    /// <summary>Embedding of entry <paramref name="index"/>.</summary>
    public ReadOnlySpan<float> Embedding(int index)
    {
        if (_embeddings is null) throw new InvalidOperationException("This knowledge store has no embeddings; call WithEmbeddings first.");
        return _embeddings.AsSpan(index * Dimension, Dimension);
    }

    /// <summary>Soft label of entry <paramref name="index"/>.</summary>
    public ReadOnlySpan<float> SoftLabel(int index) => _softLabels.AsSpan(index * LabelCount, LabelCount);

    /// <summary>
    /// destination ← Σ_j softmax(similarities / τ)_j · soft label of entries[j]: the vote of retrieved entries, as both
    /// the student's embedding retrieval and its term-match retrieval predict (and the trainer tunes them).
    /// </summary>
    internal void SoftVote(ReadOnlySpan<int> entries, ReadOnlySpan<float> similarities, double temperature, Span<float> destination)
    {
        int n = entries.Length;
        Span<float> weights = n <= 256 ? stackalloc float[n] : new float[n];
        for (int j = 0; j < n; j++) weights[j] = (float)(similarities[j] / temperature);
        Common.SafeSoftMax.Compute(weights, weights);
        destination.Clear();
        for (int j = 0; j < n; j++) System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(SoftLabel(entries[j]), weights[j], destination, destination);
    }

    /// <summary>A copy with embeddings from <paramref name="encoder"/> (needs texts), L2-normalised.</summary>
    public KnowledgeStore WithEmbeddings(IStoreEncoder encoder, int batchSize = 256, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize), $"batchSize must be positive, found {batchSize}.");
        int d = encoder.Dimension;
        var embeddings = new float[_entries.Length * d];
        for (int start = 0; start < _entries.Length; start += batchSize)
        {
            cancellation.ThrowIfCancellationRequested();
            int n = Math.Min(batchSize, _entries.Length - start);
            var batch = new (string, string?)[n];
            for (int i = 0; i < n; i++)
            {
                var e = _entries[start + i];
                batch[i] = (e.Text ?? throw new InvalidOperationException($"Entry {start + i} has no text; a store saved without texts cannot be re-embedded."), e.Text2);
            }
            encoder.Encode(batch, embeddings.AsSpan(start * d, n * d));
        }
        return WithEmbeddings(embeddings, d, encoder.Fingerprint);
    }

    /// <summary>A copy with the given embeddings (row-major <c>Count × dimension</c>), L2-normalised; their encoder is unknown (<see cref="EncoderFingerprint"/> null).</summary>
    public KnowledgeStore WithEmbeddings(float[] embeddings, int dimension) => WithEmbeddings(embeddings, dimension, null);

    /// <summary>
    /// A copy with the given embeddings (row-major <c>Count × dimension</c>), L2-normalised, produced by the encoder whose
    /// <see cref="IStoreEncoder.Fingerprint"/> is <paramref name="encoderFingerprint"/> (null: unknown).
    /// </summary>
    public KnowledgeStore WithEmbeddings(float[] embeddings, int dimension, string? encoderFingerprint)
    {
        ArgumentNullException.ThrowIfNull(embeddings);
        var copy = (float[])embeddings.Clone();
        if (dimension > 0 && copy.Length == _entries.Length * dimension)
            for (int i = 0; i < _entries.Length; i++) Normalize(copy.AsSpan(i * dimension, dimension), i);
        return new KnowledgeStore(LabelNames, _entries, copy, dimension, encoderFingerprint);
    }

    /// <summary>
    /// This store with its embeddings (unchanged, not normalised again) marked as <paramref name="encoderFingerprint"/>'s:
    /// for a component that knows which encoder produced them (a student's own store).
    /// </summary>
    internal KnowledgeStore WithEncoderFingerprint(string encoderFingerprint)
        => new(LabelNames, _entries, _embeddings, Dimension, encoderFingerprint);

    /// <summary>A copy without texts (smaller; cannot be re-embedded or explain predictions with text).</summary>
    public KnowledgeStore WithoutTexts()
        => new(LabelNames, _entries.Select(e => e with { Text = null, Text2 = null }).ToArray(), _embeddings, Dimension, EncoderFingerprint);

    /// <summary>A copy without embeddings.</summary>
    public KnowledgeStore WithoutEmbeddings() => new(LabelNames, _entries, null, 0, null);

    private static void Normalize(Span<float> v, int row)
    {
        double norm = VectorKernels.ScaleToUnitLength(v);
        if (!(norm > 0) || !double.IsFinite(norm)) throw new ArgumentException($"Entry {row}: embedding has zero, NaN or infinite norm.");
    }

    // ---------------------------------------------------------------- binary format

    /// <summary>Writes the store to <paramref name="path"/> atomically (temp file in the same folder, then rename).</summary>
    public void Save(string path, bool includeTexts = true) => WriteAtomically(path, stream => Write(stream, includeTexts));

    /// <summary>
    /// Writes <paramref name="path"/> atomically (<see cref="AtomicFile"/>); the folder must exist: a store saved into a
    /// mistyped folder fails naming it instead of creating it.
    /// </summary>
    private static void WriteAtomically(string path, Action<Stream> write) => AtomicFile.Write(path, write, createFolder: false);

    /// <summary>Writes the store in the binary format.</summary>
    public void Write(Stream stream, bool includeTexts = true)
    {
        ArgumentNullException.ThrowIfNull(stream);
        var hashing = new ChecksumStream(stream, writing: true);
        using var w = new BinaryWriter(hashing, Encoding.UTF8, leaveOpen: true);
        bool texts = includeTexts && HasTexts && _entries.Length > 0;
        w.Write(Encoding.ASCII.GetBytes(Magic));
        // Version 1 when there is no fingerprint: the same bytes as before, readable by earlier versions of the library.
        w.Write(EncoderFingerprint is null ? 1u : FingerprintVersion);
        w.Write((texts ? FlagTexts : 0) | (HasEmbeddings ? FlagEmbeddings : 0));
        w.Write(Count);
        w.Write(LabelCount);
        w.Write(Dimension);
        foreach (var name in LabelNames) WriteString(w, name);
        if (EncoderFingerprint is not null) WriteString(w, EncoderFingerprint);
        for (int i = 0; i < _entries.Length; i++)
        {
            var e = _entries[i];
            w.Write(e.Label);
            w.Write((byte)e.Source);
            w.Write(e.Fidelity);
            w.Write(MemoryMarshal.AsBytes(SoftLabel(i)));
        }
        if (texts)
            foreach (var e in _entries) { WriteString(w, e.Text); WriteString(w, e.Text2); }
        if (_embeddings is not null) WriteFloats(w, _embeddings);
        w.Flush();
        ulong checksum = hashing.Hash;
        Span<byte> tail = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(tail, checksum);
        stream.Write(tail);
    }

    // A span of bytes holds at most int.MaxValue of them, so the embeddings pass in blocks: as one span, those of a store
    // past 2 GiB (1.4 million entries of 384 floats) failed to save and to load with a bare OverflowException.
    private const int FloatsPerBlock = 1 << 20;

    private static void WriteFloats(BinaryWriter w, ReadOnlySpan<float> values)
    {
        for (int start = 0; start < values.Length; start += FloatsPerBlock)
            w.Write(MemoryMarshal.AsBytes(values.Slice(start, Math.Min(FloatsPerBlock, values.Length - start))));
    }

    private static void ReadFloats(Stream stream, Span<float> values)
    {
        for (int start = 0; start < values.Length; start += FloatsPerBlock)
            stream.ReadExactly(MemoryMarshal.AsBytes(values.Slice(start, Math.Min(FloatsPerBlock, values.Length - start))));
    }

    /// <summary>Reads a store file (see <see cref="Read"/>).</summary>
    public static KnowledgeStore Load(string path, StoreReadLimits? limits = null)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Knowledge store file not found: '{path}'.", path);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        try
        {
            var store = Read(stream, limits);
            // A store file is one store: bytes after its checksum are an append, a second store, or a copy gone wrong.
            if (stream.Position != stream.Length)
                throw new InvalidDataException($"{stream.Length - stream.Position} bytes follow the store's checksum; a store file holds one store and nothing after it.");
            return store;
        }
        catch (InvalidDataException e) { throw new InvalidDataException($"{path}: {e.Message}", e); }
    }

    /// <summary>
    /// Reads a store; throws <see cref="InvalidDataException"/> naming the problem for a truncated, tampered or foreign
    /// file. Sizes are checked against <paramref name="limits"/> and the bytes left before anything is allocated.
    /// </summary>
    public static KnowledgeStore Read(Stream stream, StoreReadLimits? limits = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        limits ??= StoreReadLimits.Default;
        long remaining = stream.CanSeek ? stream.Length - stream.Position : long.MaxValue;
        var hashing = new ChecksumStream(stream, writing: false);
        using var r = new BinaryReader(hashing, Encoding.UTF8, leaveOpen: true);
        try
        {
            var magic = r.ReadBytes(8);
            if (!magic.AsSpan().SequenceEqual(Encoding.ASCII.GetBytes(Magic)))
                throw new InvalidDataException($"not a knowledge store (magic '{PrintableMagic(magic)}', expected '{Magic}').");
            uint version = r.ReadUInt32();
            if (version is < 1 or > FormatVersion) throw new InvalidDataException($"knowledge store format version {version} is not supported (this library reads 1 to {FormatVersion}).");
            uint flags = r.ReadUInt32();
            if ((flags & ~(FlagTexts | FlagEmbeddings)) != 0) throw new InvalidDataException($"unknown flags 0x{flags:X}.");
            int count = r.ReadInt32(), labels = r.ReadInt32(), dim = r.ReadInt32();
            Check(count >= 0 && count <= limits.MaxEntries, $"entry count {count} is outside [0, {limits.MaxEntries}]{Raise(count > limits.MaxEntries, nameof(StoreReadLimits.MaxEntries))}");
            Check(labels >= 2 && labels <= limits.MaxLabels, $"label count {labels} is outside [2, {limits.MaxLabels}]{Raise(labels > limits.MaxLabels, nameof(StoreReadLimits.MaxLabels))}");
            bool hasEmbeddings = (flags & FlagEmbeddings) != 0;
            Check(hasEmbeddings ? dim > 0 && dim <= limits.MaxDimension : dim == 0, $"embedding dimension {dim} does not match flags 0x{flags:X} (max {limits.MaxDimension})");
            // Every label name holds at least its 4-byte length: a label count beyond the bytes left fails before the names are allocated.
            var needed = 8 + 4 * (Int128)labels + (Int128)count * (9 + 4L * labels) + (hasEmbeddings ? 4 * (Int128)count * dim : 0);
            Check(needed <= remaining, $"header announces {count} entries × {labels} labels{(hasEmbeddings ? $" × dim {dim}" : "")} (≥ {needed} bytes) but only {remaining} bytes remain: the file is truncated or tampered");

            var names = new string[labels];
            for (int i = 0; i < labels; i++) names[i] = ReadString(r, limits) ?? throw new InvalidDataException($"label {i} has no name.");
            string? fingerprint = version >= FingerprintVersion ? ReadString(r, limits) : null;
            var entries = new KnowledgeEntry[count];
            for (int i = 0; i < count; i++)
            {
                int label = r.ReadInt32();
                byte source = r.ReadByte();
                float fidelity = r.ReadSingle();
                var softLabel = new float[labels];
                r.BaseStream.ReadExactly(MemoryMarshal.AsBytes(softLabel.AsSpan()));
                Check(Enum.IsDefined((KnowledgeSource)source), $"entry {i}: unknown source {source}");
                entries[i] = new KnowledgeEntry(null, null, label, softLabel, fidelity, (KnowledgeSource)source);
            }
            if ((flags & FlagTexts) != 0)
                for (int i = 0; i < count; i++)
                    entries[i] = entries[i] with { Text = ReadString(r, limits), Text2 = ReadString(r, limits) };
            float[]? embeddings = null;
            if (hasEmbeddings)
            {
                embeddings = new float[(long)count * dim];
                ReadFloats(r.BaseStream, embeddings);
            }
            ulong computed = hashing.Hash;
            Span<byte> tail = stackalloc byte[8];
            if (stream.ReadAtLeast(tail, 8, throwOnEndOfStream: false) != 8) throw new InvalidDataException("the checksum is missing: the file is truncated.");
            ulong stored = BinaryPrimitives.ReadUInt64LittleEndian(tail);
            Check(stored == computed, $"checksum mismatch (stored {stored:X16}, computed {computed:X16}): the file is corrupt or was modified");
            try { return new KnowledgeStore(names, entries, embeddings, dim, fingerprint); }
            catch (ArgumentException e) { throw new InvalidDataException(e.Message, e); }
        }
        catch (EndOfStreamException e)
        {
            throw new InvalidDataException("unexpected end of file: the knowledge store is truncated.", e);
        }
    }

    /// <summary>
    /// A file's first bytes as one printable line: printable ASCII as itself, any other byte as \xNN (a model.zip or
    /// any binary file starts with control bytes, which must not reach a log line or a terminal).
    /// </summary>
    internal static string PrintableMagic(ReadOnlySpan<byte> bytes)
    {
        var b = new StringBuilder(bytes.Length * 4);
        foreach (var x in bytes) b.Append(x is >= 0x20 and < 0x7F && x != (byte)'\\' ? ((char)x).ToString() : $"\\x{x:X2}");
        return b.ToString();
    }

    /// <summary>For a value over a read limit: the limit a caller who trusts the file can raise (a store this library wrote can exceed the defaults).</summary>
    private static string Raise(bool over, string limit) => over ? $" (for a file you trust, raise StoreReadLimits.{limit})" : "";

    private static void Check(bool condition, string message)
    {
        if (!condition) throw new InvalidDataException(message + ".");
    }

    private static void WriteString(BinaryWriter w, string? s)
    {
        if (s is null) { w.Write(-1); return; }
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write(bytes.Length);
        w.Write(bytes);
    }

    private static string? ReadString(BinaryReader r, StoreReadLimits limits)
    {
        int length = r.ReadInt32();
        if (length == -1) return null;
        // Read for every text: the message is built only when the check fails.
        if (length < 0 || length > limits.MaxStringBytes)
            Check(false, $"string length {length} is outside [0, {limits.MaxStringBytes}]{Raise(length > limits.MaxStringBytes, nameof(StoreReadLimits.MaxStringBytes))}");
        var bytes = new byte[length];
        r.BaseStream.ReadExactly(bytes);
        return Encoding.UTF8.GetString(bytes);
    }

    // ---------------------------------------------------------------- JSONL

    /// <summary>
    /// Writes JSONL atomically: a header line <c>{"retrikt_store":1,"labels":[...]}</c>, then one object per entry
    /// (<c>text</c>, <c>text2</c>, <c>label</c> name, <c>soft_label</c>, <c>fidelity</c>, <c>source</c>). Embeddings are
    /// not exported (they belong to one encoder), so a store without texts is refused: its file would hold no entry's
    /// content, and <see cref="ImportJsonl"/> could not read it back.
    /// </summary>
    public void ExportJsonl(string path)
    {
        if (!HasTexts)
            throw new InvalidOperationException($"ExportJsonl '{path}': this store has no texts (saved without them), and JSONL holds no embeddings, " +
                                                "so no entry would keep its content; save it with Save (binary) instead.");
        WriteAtomically(path, stream =>
        {
            using (var writer = new StreamWriter(stream, new UTF8Encoding(false), leaveOpen: true))
            {
                writer.WriteLine(new JsonObject { ["retrikt_store"] = 1, ["labels"] = new JsonArray(LabelNames.Select(n => (JsonNode)n!).ToArray()) }.ToJsonString());
                for (int i = 0; i < _entries.Length; i++)
                {
                    var e = _entries[i];
                    var o = new JsonObject
                    {
                        ["text"] = e.Text,
                        ["text2"] = e.Text2,
                        ["label"] = LabelNames[e.Label],
                        // The store's own copy, as the binary format and retrieval read it.
                        ["soft_label"] = new JsonArray(SoftLabel(i).ToArray().Select(p => (JsonNode)p!).ToArray()),
                        ["fidelity"] = e.Fidelity,
                        ["source"] = e.Source.ToString(),
                    };
                    writer.WriteLine(o.ToJsonString());
                }
            }
        });
    }

    /// <summary>
    /// Reads JSONL written by <see cref="ExportJsonl"/> (or by hand: <c>text</c> and <c>label</c> required; a missing
    /// <c>soft_label</c> becomes one-hot; an empty <c>text2</c> is none, as in a store view; <c>source</c>, when there, is a <see cref="KnowledgeSource"/> name in any case, else Imported). The store's label names are <paramref name="labelNames"/>, else the first header
    /// line's. A header's label order is the order of the <c>soft_label</c> values on the lines after it (up to the next
    /// header), which are moved into the store's order; a header naming other labels is an error. Lines before any header
    /// are read in the order of <paramref name="labelNames"/>; where their own labels show that the values are in another
    /// order (most lines of each label rank one other label first, or most FewShot lines rank another label than theirs
    /// first), the import fails naming a line. Errors name the line and the field; so does a byte that is not UTF-8
    /// (<see cref="Utf8TextFile"/>).
    /// </summary>
    public static KnowledgeStore ImportJsonl(string path, IReadOnlyList<string>? labelNames = null)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"JSONL file not found: '{path}'.", path);
        var names = labelNames?.ToList();
        // Slot i of a line's soft_label is label fileOrder[i] of the store: the file's header may order the labels
        // differently from the names given, and a concatenation of exports carries one header per part.
        int[]? fileOrder = null;
        var entries = new List<KnowledgeEntry>();
        // Lines whose soft_label no header orders (before any header, with the names given): they are read in the names'
        // order, and checked against it at the end.
        var unordered = new List<(KnowledgeEntry Entry, int Line)>();
        int lineNumber = 0;
        // A byte that is not UTF-8 fails with the line instead of storing U+FFFD in a text (or a label name).
        foreach (var line in Utf8TextFile.ReadLines(path))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonNode node;
            try { node = JsonNode.Parse(line) ?? throw new JsonException("null"); }
            catch (JsonException e) { throw new InvalidDataException($"{path} line {lineNumber}: not valid JSON ({e.Message}).", e); }
            if (node is not JsonObject fields) throw new InvalidDataException($"{path} line {lineNumber}: expected a JSON object, found {node.GetValueKind()}.");
            if (fields["retrikt_store"] is not null)
            {
                if (fields["labels"] is { } header)
                {
                    var headerNames = header is JsonArray list && list.All(n => n?.GetValueKind() == JsonValueKind.String)
                        ? list.Select(n => n!.GetValue<string>()).ToList()
                        : throw new InvalidDataException($"{path} line {lineNumber}: the header's 'labels' must be an array of strings, found {header.ToJsonString()}.");
                    names ??= headerNames;
                    if (headerNames.Count != names.Count || headerNames.Distinct(StringComparer.Ordinal).Count() != names.Count || headerNames.Any(n => !names.Contains(n)))
                        throw new InvalidDataException($"{path} line {lineNumber}: the header's labels [{string.Join(", ", headerNames)}] are not the label names " +
                                                       $"{(labelNames is null ? "of the first header" : "given")} [{string.Join(", ", names)}] (the same names are needed, in any order).");
                    fileOrder = headerNames.Select(n => names.IndexOf(n)).ToArray();
                }
                continue;
            }
            if (names is null) throw new InvalidDataException($"{path} line {lineNumber}: no header line with label names, and none were given.");
            string at = $"{path} line {lineNumber}";
            string? Text(string name, bool required)
            {
                var value = fields[name];
                if (value is null) return required ? throw new InvalidDataException($"{at}: field '{name}' is missing.") : null;
                return value.GetValueKind() == JsonValueKind.String ? value.GetValue<string>()
                    : throw new InvalidDataException($"{at}: field '{name}' must be a string, found {value.GetValueKind()} {value.ToJsonString()}.");
            }
            float Number(JsonNode? value, string name) => value?.GetValueKind() == JsonValueKind.Number ? value.GetValue<float>()
                : throw new InvalidDataException($"{at}: field '{name}' must hold numbers, found {value?.GetValueKind().ToString() ?? "null"} {value?.ToJsonString()}.");
            var text = Text("text", required: true)!;
            var label = Text("label", required: true)!;
            int index = names.IndexOf(label);
            if (index < 0) throw new InvalidDataException($"{at}: label '{label}' is not one of [{string.Join(", ", names)}].");
            float[] soft;
            bool ordered = true;
            if (fields["soft_label"] is { } softNode)
            {
                if (softNode is not JsonArray array) throw new InvalidDataException($"{at}: field 'soft_label' must be an array of {names.Count} numbers, found {softNode.ToJsonString()}.");
                soft = array.Select(v => Number(v, "soft_label")).ToArray();
                if (soft.Length != names.Count) throw new InvalidDataException($"{at}: soft_label has {soft.Length} values, expected {names.Count}.");
                if (fileOrder is not null)
                {
                    var moved = new float[soft.Length];
                    for (int i = 0; i < soft.Length; i++) moved[fileOrder[i]] = soft[i];
                    soft = moved;
                }
                else ordered = false;
            }
            else { soft = new float[names.Count]; soft[index] = 1; }
            var source = KnowledgeSource.Imported;
            if (Text("source", required: false) is { } s)
                source = KnowledgeSourceNames.Parse(s) ?? throw new InvalidDataException($"{at}: source '{s}' is not one of [{string.Join(", ", Enum.GetNames<KnowledgeSource>())}].");
            // An empty text2 is no second text, as in a store view: kept as "", the entry encoded as a pair ([CLS] text [SEP] [SEP])
            // that a query of one text never is, and retrieved its own text below cosine 1.
            var text2 = Text("text2", required: false) is { Length: > 0 } second ? second : null;
            var entry = new KnowledgeEntry(text, text2, index, soft, fields["fidelity"] is { } f ? Number(f, "fidelity") : 1f, source);
            if (EntryError(entry, names.Count) is { } error) throw new InvalidDataException($"{at}: {error}");
            entries.Add(entry);
            if (!ordered) unordered.Add((entry, lineNumber));
        }
        if (names is null) throw new InvalidDataException($"{path}: empty file, no label names.");
        // Without a header the soft_label values are taken in the order of the names given: given in another order than the
        // file's (every file ExportJsonl writes has a header, a file of one's own need not), every entry would carry another
        // label's probabilities. The lines' own labels show such an order, as a store view's do without SlotNames.
        if (SoftLabelOrder.Find(unordered.Select(u => u.Entry).ToList(), names.Count) is { } found)
        {
            var (first, line) = unordered[found.First];
            throw new InvalidDataException($"{path}: no header line gives the order of the soft_label values, and read in the order of the label names given " +
                $"[{string.Join(", ", names)}] " + (found.ByFewShot
                    ? $"{found.Count} of the {found.Of} FewShot lines (gold labels, one-hot soft labels) give another label than theirs the highest probability " +
                      $"(the first: line {line}, label '{names[first.Label]}', soft_label [{SoftLabelOrder.Probabilities(first.SoftLabel)}])"
                    : $"{found.Count} of the {found.Of} lines labelled '{names[found.Label]}' give label '{names[found.RankedFirst]}' the highest probability " +
                      $"(the first: line {line}, soft_label [{SoftLabelOrder.Probabilities(first.SoftLabel)}])") +
                "; the values are in another order than these names. Give the names in the file's order, or start the file with a header line " +
                "{\"retrikt_store\":1,\"labels\":[...]} in that order.");
        }
        try { return new KnowledgeStore(names, entries); }
        catch (ArgumentException e) { throw new InvalidDataException($"{path}: {e.Message}", e); }
    }
}
