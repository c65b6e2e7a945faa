using System.Buffers.Binary;
using System.Text.Json.Nodes;

namespace RetriKT.MLNet.Encoders;

/// <summary>One tensor entry of a safetensors header.</summary>
internal sealed record SafetensorsEntry(string Name, string DType, long[] Shape, long Begin, long End, string File);

/// <summary>
/// Reads the safetensors format without TorchSharp: 8-byte little-endian header length, a JSON header
/// <c>{name: {dtype, shape, data_offsets: [begin, end]}}</c> (plus optional <c>__metadata__</c>), then raw little-endian data.
/// Lives in the runtime so a managed BERT encoder can load a Hugging Face directory; the training assembly's
/// <c>Teacher.Safetensors</c> (writer, TorchSharp tensors) uses the same header parser. Only F32, F16 and BF16 are
/// read as floats, which covers every checkpoint we load; integer and bool buffers parse (their bytes are checked)
/// but are not read, and anything else is named in the error.
/// </summary>
internal static class SafetensorsReader
{
    private const long MaxHeaderBytes = 100_000_000;

    /// <summary>Parses the header of <paramref name="path"/>: every tensor's bytes lie in the data section, match its
    /// dtype and shape, and the tensors tile the data section (no overlap, no hole, nothing after the last).</summary>
    public static Dictionary<string, SafetensorsEntry> ReadHeader(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Safetensors file not found: {path}", path);
        using var fs = File.OpenRead(path);
        long fileLength = fs.Length;
        if (fileLength < 8) throw new InvalidDataException($"{path}: truncated safetensors file ({fileLength} bytes, expected at least 8).");
        Span<byte> lenBytes = stackalloc byte[8];
        fs.ReadExactly(lenBytes);
        long headerLength = BinaryPrimitives.ReadInt64LittleEndian(lenBytes);
        if (headerLength <= 0 || headerLength > MaxHeaderBytes || 8 + headerLength > fileLength)
            throw new InvalidDataException($"{path}: safetensors header length {headerLength} does not fit the file ({fileLength} bytes); the file is truncated or not safetensors.");
        var header = new byte[headerLength];
        fs.ReadExactly(header);
        var root = Common.JsonFiles.ParseObject(System.Text.Encoding.UTF8.GetString(header), $"{path}: safetensors header");

        long dataStart = 8 + headerLength, dataLength = fileLength - dataStart;
        var entries = new Dictionary<string, SafetensorsEntry>(StringComparer.Ordinal);
        foreach (var (name, node) in root)
        {
            if (name == "__metadata__") continue;
            InvalidDataException Malformed(string what) =>
                new($"{path}: tensor '{name}': {what} in the safetensors header; expected {{\"dtype\": \"F32\", \"shape\": [..], \"data_offsets\": [begin, end]}}.");
            if (node is not JsonObject o) throw Malformed("the entry is not an object");
            string dtype = o["dtype"] is JsonValue d && d.TryGetValue<string>(out var text) ? text : throw Malformed("'dtype' is missing or not a string");
            long[] shape = Integers(o["shape"]) is { } dims && dims.All(x => x >= 0) ? dims : throw Malformed("'shape' is not a list of sizes");
            long[] offsets = Integers(o["data_offsets"]) is { Length: 2 } pair ? pair : throw Malformed("'data_offsets' is not [begin, end]");
            long begin = offsets[0], end = offsets[1];
            if (end > dataLength || begin < 0 || end < begin)
                throw new InvalidDataException($"{path}: tensor '{name}' data [{begin}, {end}) lies outside the {dataLength} data bytes; the file is truncated.");
            // Checked: a shape whose byte count wraps around 2^64 to the tensor's real size passed, and allocating it failed
            // deep in libtorch ("Storage size calculation overflowed", a native stack trace).
            int elementSize = ElementSize(dtype, name, path);
            long expected;
            try { expected = checked(shape.Aggregate(1L, (a, b) => checked(a * b)) * elementSize); }
            catch (OverflowException)
            {
                throw new InvalidDataException($"{path}: tensor '{name}' has {end - begin} bytes, but shape [{string.Join(",", shape)}] of {dtype} needs more than {long.MaxValue} bytes.");
            }
            if (end - begin != expected)
                throw new InvalidDataException($"{path}: tensor '{name}' has {end - begin} bytes, but shape [{string.Join(",", shape)}] of {dtype} needs {expected}.");
            entries[name] = new SafetensorsEntry(name, dtype, shape, dataStart + begin, dataStart + end, path);
        }
        CheckTiling(path, entries.Values, dataStart, dataLength);
        return entries;
    }

    /// <summary>
    /// The tensors must tile the data section: sorted by offset, each begins where the previous ends, the first at 0 and
    /// the last at its end (as the reference library requires). Otherwise two tensors share bytes (one silently reads the
    /// other's values) or bytes belong to no tensor (a stale or damaged file).
    /// </summary>
    private static void CheckTiling(string path, IEnumerable<SafetensorsEntry> entries, long dataStart, long dataLength)
    {
        long cursor = 0;
        SafetensorsEntry? previous = null;
        foreach (var e in entries.OrderBy(e => e.Begin).ThenBy(e => e.End).ThenBy(e => e.Name, StringComparer.Ordinal))
        {
            long begin = e.Begin - dataStart, end = e.End - dataStart;
            if (begin < cursor)
                throw new InvalidDataException($"{path}: tensor '{e.Name}' data [{begin}, {end}) overlaps tensor '{previous!.Name}' data " +
                    $"[{previous.Begin - dataStart}, {cursor}); expected it to begin at {cursor}, found {begin}.");
            if (begin > cursor)
                throw new InvalidDataException($"{path}: data bytes [{cursor}, {begin}) belong to no tensor (a hole before tensor '{e.Name}'); " +
                    $"expected it to begin at {cursor}, found {begin}.");
            (cursor, previous) = (end, e);
        }
        if (cursor != dataLength)
            throw new InvalidDataException($"{path}: data bytes [{cursor}, {dataLength}) belong to no tensor " +
                $"({(previous is null ? "the header lists none" : $"after the last tensor '{previous.Name}'")}); " +
                $"expected a data section of {cursor} bytes, found {dataLength}.");
    }

    /// <summary>The integers of a JSON array, or null when <paramref name="node"/> is anything else.</summary>
    private static long[]? Integers(JsonNode? node)
    {
        if (node is not JsonArray array) return null;
        var values = new long[array.Count];
        for (int i = 0; i < values.Length; i++)
            if (array[i] is not JsonValue v || !v.TryGetValue(out values[i])) return null;
        return values;
    }

    /// <summary>
    /// Bytes per element of <paramref name="dtype"/>. Integer and bool dtypes are sized too, so a header that holds a
    /// buffer (the int64 <c>embeddings.position_ids</c> of checkpoints saved before transformers 4.31) is checked and
    /// parsed; only <see cref="ReadFloat32"/> refuses to read one. Any other dtype fails with the tensor and file.
    /// </summary>
    public static int ElementSize(string dtype, string name, string path) => dtype switch
    {
        "F64" or "I64" or "U64" => 8,
        "F32" or "I32" or "U32" => 4,
        "F16" or "BF16" or "I16" or "U16" => 2,
        "I8" or "U8" or "BOOL" => 1,
        _ => throw new NotSupportedException($"{path}: tensor '{name}' has dtype {dtype}; only F32, F16 and BF16 tensors (and integer or bool buffers, which are skipped) are supported."),
    };

    /// <summary>Whether <see cref="ReadFloat32"/> reads a tensor of <paramref name="dtype"/> (F32, F16, BF16).</summary>
    public static bool IsFloat(string dtype) => dtype is "F32" or "F16" or "BF16";

    /// <summary>Whether <paramref name="dtype"/> is an integer or bool type: a buffer (positions, ids), never a weight.</summary>
    public static bool IsIntegerOrBool(string dtype) => dtype is "I64" or "U64" or "I32" or "U32" or "I16" or "U16" or "I8" or "U8" or "BOOL";

    /// <summary>Reads one tensor as float32 (F16 and BF16 widened exactly, as torch's <c>.float()</c> does).</summary>
    public static float[] ReadFloat32(SafetensorsEntry e)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("Big-endian hosts are not supported.");
        if (!IsFloat(e.DType))
            throw new NotSupportedException($"{e.File}: tensor '{e.Name}' has dtype {e.DType}; only F32, F16 and BF16 tensors are read as float32.");
        var bytes = new byte[e.End - e.Begin];
        using (var fs = File.OpenRead(e.File))
        {
            fs.Seek(e.Begin, SeekOrigin.Begin);
            fs.ReadExactly(bytes);
        }
        int size = ElementSize(e.DType, e.Name, e.File), n = bytes.Length / size;
        var result = new float[n];
        switch (e.DType)
        {
            case "F32":
                Buffer.BlockCopy(bytes, 0, result, 0, bytes.Length);
                break;
            case "F16":
                for (int i = 0; i < n; i++) result[i] = (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(2 * i)));
                break;
            default: // BF16: the top 16 bits of a float32
                for (int i = 0; i < n; i++) result[i] = BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(2 * i)) << 16);
                break;
        }
        return result;
    }
}
