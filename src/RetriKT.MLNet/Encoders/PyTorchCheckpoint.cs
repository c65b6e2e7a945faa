using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace RetriKT.MLNet.Encoders;

/// <summary>
/// Reads float32 tensors from a PyTorch zip checkpoint (<c>pytorch_model.bin</c>, torch ≥ 1.6) without executing
/// anything: a restricted unpickler for the pickle opcodes <c>torch.save(state_dict)</c> emits, which accepts only
/// the globals a state dict needs (<c>collections.OrderedDict</c>, <c>torch._utils._rebuild_tensor_v2</c>,
/// <c>torch.*Storage</c>) and fails on any other global, so a malicious pickle cannot run code. Float, half and
/// bfloat16 storages are read as float32; integer and bool storages (e.g. the int64 <c>position_ids</c> buffer) are
/// skipped; any other storage type, a non-contiguous view and a big-endian save are refused by name.
/// </summary>
internal static class PyTorchCheckpoint
{
    private sealed record Global(string Module, string Name);
    private sealed record StorageRef(string Type, string Key);
    private sealed record TensorRef(StorageRef Storage, long Offset, long[] Shape, long[] Stride);
    private sealed class Mark;

    /// <summary>Name → (shape, data as float32) of every floating-point tensor in the checkpoint.</summary>
    public static Dictionary<string, (long[] Shape, float[] Data)> ReadFloatTensors(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"PyTorch checkpoint not found: {path}", path);
        ZipArchive zip;
        try { zip = ZipFile.OpenRead(path); }
        catch (InvalidDataException e) { throw new InvalidDataException($"{path}: not a PyTorch zip checkpoint (legacy pre-1.6 pickles are not read): {e.Message}", e); }
        using (zip)
        {
            var pickle = zip.Entries.SingleOrDefault(e => e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal) || e.FullName == "data.pkl")
                ?? throw new InvalidDataException($"{path}: no data.pkl inside; not a PyTorch zip checkpoint.");
            string prefix = pickle.FullName[..^"data.pkl".Length];
            // torch >= 2.1 records the byte order it saved in; a big-endian save read as little-endian gives garbage weights.
            if (zip.GetEntry(prefix + "byteorder") is { } order)
            {
                using var reader = new StreamReader(order.Open());
                var text = reader.ReadToEnd().Trim();
                if (text != "little") throw new NotSupportedException($"{path}: byteorder is '{text}'; only little-endian checkpoints are read.");
            }
            byte[] bytes;
            using (var s = pickle.Open()) { using var m = new MemoryStream(); s.CopyTo(m); bytes = m.ToArray(); }
            if (Unpickle(bytes, path) is not Dictionary<object, object?> root)
                throw new InvalidDataException($"{path}: data.pkl does not hold a state dict (name → tensor).");

            var result = new Dictionary<string, (long[] Shape, float[] Data)>(StringComparer.Ordinal);
            foreach (var (key, value) in root)
            {
                if (key is not string name || value is not TensorRef t) throw new InvalidDataException($"{path}: state dict entry '{key}' is not a tensor.");
                // Half and bfloat16 checkpoints are widened exactly (as the safetensors reader does); integer and bool
                // storages are buffers (position_ids), never weights. Any other type (double, complex, quantized) is
                // named: skipping it made the tensor look 'missing'.
                int size = t.Storage.Type switch { "FloatStorage" => 4, "HalfStorage" or "BFloat16Storage" => 2, _ => 0 };
                if (size == 0)
                {
                    if (t.Storage.Type is "LongStorage" or "IntStorage" or "ShortStorage" or "CharStorage" or "ByteStorage" or "BoolStorage") continue;
                    throw new NotSupportedException($"{path}: tensor '{name}' is stored as {t.Storage.Type}; only FloatStorage, HalfStorage and BFloat16Storage are read.");
                }
                long count = t.Shape.Aggregate(1L, (a, b) => a * b);
                long expectedStride = 1;
                for (int d = t.Shape.Length - 1; d >= 0; d--)
                {
                    if (t.Shape[d] != 1 && t.Stride[d] != expectedStride)
                        throw new InvalidDataException($"{path}: tensor '{name}' is a non-contiguous view (stride [{string.Join(",", t.Stride)}]); re-save it contiguous.");
                    expectedStride *= t.Shape[d];
                }
                var entry = zip.GetEntry(prefix + "data/" + t.Storage.Key)
                    ?? throw new InvalidDataException($"{path}: storage '{t.Storage.Key}' of tensor '{name}' is missing.");
                using var s = entry.Open();
                using var m = new MemoryStream();
                s.CopyTo(m);
                var raw = m.GetBuffer().AsSpan(0, (int)m.Length);
                if (t.Offset < 0 || (t.Offset + count) * size > raw.Length)
                    throw new InvalidDataException($"{path}: tensor '{name}' needs bytes [{t.Offset * size}, {(t.Offset + count) * size}) of storage '{t.Storage.Key}', which has {raw.Length}.");
                var data = new float[count];
                var stored = raw.Slice((int)(t.Offset * size), (int)(count * size));
                switch (t.Storage.Type)
                {
                    case "FloatStorage":
                        for (int i = 0; i < data.Length; i++) data[i] = BinaryPrimitives.ReadSingleLittleEndian(stored[(4 * i)..]);
                        break;
                    case "HalfStorage":
                        for (int i = 0; i < data.Length; i++) data[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(stored[(2 * i)..]);
                        break;
                    default: // bfloat16: the top 16 bits of a float32
                        for (int i = 0; i < data.Length; i++) data[i] = BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(stored[(2 * i)..]) << 16);
                        break;
                }
                result[name] = (t.Shape, data);
            }
            return result;
        }
    }

    private static object? Unpickle(byte[] p, string source)
    {
        var stack = new List<object?>();
        var memo = new Dictionary<long, object?>();
        int pos = 0;
        InvalidDataException Bad(string what) => new($"{source}: data.pkl {what} at byte {pos}.");
        byte Byte() => pos < p.Length ? p[pos++] : throw Bad("ends early");
        ReadOnlySpan<byte> Take(int n) { if (n < 0 || pos + n > p.Length) throw Bad("ends early"); pos += n; return p.AsSpan(pos - n, n); }
        string Line() { int end = Array.IndexOf(p, (byte)'\n', pos); if (end < 0) throw Bad("ends early"); var s = Encoding.ASCII.GetString(p, pos, end - pos); pos = end + 1; return s; }
        object? Pop() { if (stack.Count == 0) throw Bad("pops an empty stack"); var v = stack[^1]; stack.RemoveAt(stack.Count - 1); return v; }
        List<object?> PopToMark()
        {
            int m = stack.FindLastIndex(o => o is Mark);
            if (m < 0) throw Bad("has no MARK");
            var items = stack.GetRange(m + 1, stack.Count - m - 1);
            stack.RemoveRange(m, stack.Count - m);
            return items;
        }
        while (true)
        {
            byte op = Byte();
            switch (op)
            {
                case 0x80: Byte(); break;                                           // PROTO
                case (byte)'.': return Pop();                                       // STOP
                case (byte)'}': stack.Add(new Dictionary<object, object?>()); break; // EMPTY_DICT
                case (byte)']': stack.Add(new List<object?>()); break;              // EMPTY_LIST
                case (byte)')': stack.Add(new List<object?>()); break;              // EMPTY_TUPLE
                case (byte)'(': stack.Add(new Mark()); break;                       // MARK
                case (byte)'N': stack.Add(null); break;
                case 0x88: stack.Add(true); break;
                case 0x89: stack.Add(false); break;
                case (byte)'K': stack.Add((long)Byte()); break;                     // BININT1
                case (byte)'M': stack.Add((long)BinaryPrimitives.ReadUInt16LittleEndian(Take(2))); break;
                case (byte)'J': stack.Add((long)BinaryPrimitives.ReadInt32LittleEndian(Take(4))); break;
                case 0x8a:                                                          // LONG1
                {
                    var b = Take(Byte());
                    long v = 0;
                    for (int i = b.Length - 1; i >= 0; i--) v = (v << 8) | b[i];
                    if (b.Length is > 0 and < 8 && (b[^1] & 0x80) != 0) v -= 1L << (8 * b.Length);
                    stack.Add(v);
                    break;
                }
                case (byte)'X': stack.Add(Encoding.UTF8.GetString(Take(BinaryPrimitives.ReadInt32LittleEndian(Take(4))))); break;
                case (byte)'T': stack.Add(Encoding.Latin1.GetString(Take(BinaryPrimitives.ReadInt32LittleEndian(Take(4))))); break;
                case (byte)'U': stack.Add(Encoding.Latin1.GetString(Take(Byte()))); break;
                case (byte)'q': memo[Byte()] = stack[^1]; break;                    // BINPUT
                case (byte)'r': memo[BinaryPrimitives.ReadUInt32LittleEndian(Take(4))] = stack[^1]; break;
                case (byte)'h': stack.Add(memo.TryGetValue(Byte(), out var m1) ? m1 : throw Bad("reads an unset memo slot")); break;
                case (byte)'j': stack.Add(memo.TryGetValue(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)), out var m4) ? m4 : throw Bad("reads an unset memo slot")); break;
                case (byte)'t': stack.Add(PopToMark()); break;                      // TUPLE
                case 0x85: stack.Add(new List<object?> { Pop() }); break;
                case 0x86: { var b = Pop(); var a = Pop(); stack.Add(new List<object?> { a, b }); break; }
                case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); stack.Add(new List<object?> { a, b, c }); break; }
                case (byte)'a': { var v = Pop(); (stack[^1] as List<object?> ?? throw Bad("APPEND to a non-list")).Add(v); break; }
                case (byte)'e': { var items = PopToMark(); (stack[^1] as List<object?> ?? throw Bad("APPENDS to a non-list")).AddRange(items); break; }
                case (byte)'s': { var v = Pop(); var k = Pop(); Dict(stack[^1])[k!] = v; break; }
                case (byte)'u':
                {
                    var items = PopToMark();
                    var d = Dict(stack[^1]);
                    for (int i = 0; i + 1 < items.Count; i += 2) d[items[i]!] = items[i + 1];
                    break;
                }
                case (byte)'c':                                                     // GLOBAL
                {
                    var g = new Global(Line(), Line());
                    bool allowed = (g.Module, g.Name) is ("collections", "OrderedDict") or ("torch._utils", "_rebuild_tensor_v2")
                        || (g.Module == "torch" && g.Name.EndsWith("Storage", StringComparison.Ordinal));
                    if (!allowed) throw Bad($"refers to global {g.Module}.{g.Name}, which a state dict never needs (refused)");
                    stack.Add(g);
                    break;
                }
                case (byte)'Q':                                                     // BINPERSID
                {
                    if (Pop() is not List<object?> { Count: >= 3 } id || id[0] as string != "storage" || id[1] is not Global type || id[2] is not string key)
                        throw Bad("has a persistent id that is not a torch storage");
                    stack.Add(new StorageRef(type.Name, key));
                    break;
                }
                case (byte)'R':                                                     // REDUCE
                {
                    var args = Pop() as List<object?> ?? throw Bad("REDUCE without an argument tuple");
                    var f = Pop() as Global ?? throw Bad("REDUCE of a non-global");
                    if (f.Name == "OrderedDict") stack.Add(new Dictionary<object, object?>());
                    else if (f.Name == "_rebuild_tensor_v2" && args.Count >= 4 && args[0] is StorageRef s && args[1] is long offset
                             && args[2] is List<object?> size && args[3] is List<object?> stride)
                        stack.Add(new TensorRef(s, offset, size.Select(x => (long)x!).ToArray(), stride.Select(x => (long)x!).ToArray()));
                    else throw Bad($"calls {f.Module}.{f.Name} with unexpected arguments");
                    break;
                }
                case (byte)'b': Pop(); break;                                       // BUILD: state (e.g. _metadata) is not needed
                default: throw Bad($"uses pickle opcode 0x{op:x2}, which a state dict does not need");
            }
        }

        Dictionary<object, object?> Dict(object? o) => o as Dictionary<object, object?> ?? throw Bad("SETITEM on a non-dict");
    }
}
