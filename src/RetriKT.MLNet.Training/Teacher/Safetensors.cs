using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using RetriKT.MLNet.Encoders;
using TorchSharp;
using static TorchSharp.torch;
using RetriKT.MLNet.Common;

namespace RetriKT.MLNet.Teacher;

/// <summary>
/// Reader and writer of the safetensors format: 8-byte little-endian header length, a JSON header
/// <c>{name: {dtype, shape, data_offsets: [begin, end]}}</c> (plus optional <c>__metadata__</c>), then raw little-endian data.
/// Only F32, F16 and BF16 are read, which covers every LLM checkpoint we load; anything else is named in the error.
/// </summary>
internal static class Safetensors
{
    /// <summary>Parses the header of <paramref name="path"/> (the runtime's parser): offsets inside the data section, sizes
    /// matching dtype × shape, and the tensors tiling the data section without overlap or hole.</summary>
    public static Dictionary<string, SafetensorsEntry> ReadHeader(string path) => SafetensorsReader.ReadHeader(path);

    /// <summary>Reads one tensor to CPU in its stored dtype.</summary>
    public static Tensor ReadTensor(SafetensorsEntry e)
    {
        // The header parser sizes integer buffers too (a BERT checkpoint's position_ids); a teacher reads floats only.
        var scalar = e.DType switch
        {
            "F32" => ScalarType.Float32, "F16" => ScalarType.Float16, "BF16" => ScalarType.BFloat16,
            _ => throw new NotSupportedException($"{e.File}: tensor '{e.Name}' has dtype {e.DType}; only F32, F16 and BF16 tensors are read."),
        };
        var t = empty(e.Shape, scalar, CPU);
        using var fs = File.OpenRead(e.File);
        fs.Seek(e.Begin, SeekOrigin.Begin);
        var span = t.bytes;
        if (span.Length != e.End - e.Begin)
            throw new InvalidDataException($"{e.File}: tensor '{e.Name}' size mismatch while reading.");
        fs.ReadExactly(span);
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("Big-endian hosts are not supported.");
        return t;
    }

    /// <summary>Writes tensors (F32/F16/BF16, any device) to <paramref name="path"/> atomically (temp file + rename).</summary>
    public static void Write(string path, IEnumerable<(string Name, Tensor Tensor)> tensors)
    {
        var list = tensors.OrderBy(t => t.Name, StringComparer.Ordinal).ToList();
        var header = new JsonObject { ["__metadata__"] = new JsonObject { ["format"] = "pt" } };
        long offset = 0;
        foreach (var (name, t) in list)
        {
            string dtype = t.dtype switch
            {
                ScalarType.Float32 => "F32", ScalarType.Float16 => "F16", ScalarType.BFloat16 => "BF16",
                _ => throw new NotSupportedException($"Cannot write tensor '{name}' of dtype {t.dtype}; only float32/float16/bfloat16."),
            };
            long bytes = t.numel() * (dtype == "F32" ? 4 : 2);
            header[name] = new JsonObject
            {
                ["dtype"] = dtype, ["shape"] = new JsonArray(t.shape.Select(s => (JsonNode?)s).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + bytes),
            };
            offset += bytes;
        }
        var headerBytes = Encoding.UTF8.GetBytes(header.ToJsonString());
        int pad = (8 - headerBytes.Length % 8) % 8; // align the data section, as the reference writer does
        if (pad > 0) headerBytes = [.. headerBytes, .. Enumerable.Repeat((byte)' ', pad)];

        AtomicFile.Write(path, fs =>
        {
            Span<byte> len = stackalloc byte[8];
            BinaryPrimitives.WriteInt64LittleEndian(len, headerBytes.Length);
            fs.Write(len);
            fs.Write(headerBytes);
            foreach (var (_, t) in list)
            {
                using var scope = NewDisposeScope(); // every handle detach() and to() make, not only the last
                var cpu = t.detach().to(CPU).contiguous();
                fs.Write(cpu.bytes);
            }
        });
    }
}
