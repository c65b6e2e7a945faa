using System.IO.Compression;
using System.Text;
using System.Text.Json.Nodes;
using RetriKT.MLNet.Encoders;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Encoders;

/// <summary>
/// Checkpoint and config variants found by the loader audit: valid ones (an int64 position_ids buffer in safetensors,
/// half or bfloat16 pickles) load as what they are; damaged or unsupported ones fail with one line naming the file.
/// </summary>
public class CheckpointFormatTests
{
    private static string TinyBert => SharedData.Path("models", "hf-tiny-random-bert");
    private static string GoldenBert => SharedData.Path("models", "bert-uncased-tokenizer-golden");

    private static TempDir Copy(string source, params string[] files)
    {
        var temp = new TempDir("retrikt-bert-");
        foreach (var f in files) File.Copy(Path.Combine(source, f), temp.File(f));
        return temp;
    }

    /// <summary>Rewrites a PyTorch zip checkpoint entry by entry (stored, as torch writes them).</summary>
    private static void RewriteZip(string path, Func<string, byte[], byte[]> change, params (string Name, byte[] Bytes)[] extra)
    {
        var rewritten = path + ".new";
        using (var source = ZipFile.OpenRead(path))
        using (var target = ZipFile.Open(rewritten, ZipArchiveMode.Create))
        {
            foreach (var entry in source.Entries)
            {
                using var s = entry.Open();
                using var m = new MemoryStream();
                s.CopyTo(m);
                using var w = target.CreateEntry(entry.FullName, CompressionLevel.NoCompression).Open();
                w.Write(change(entry.FullName, m.ToArray()));
            }
            foreach (var (name, bytes) in extra)
            {
                using var w = target.CreateEntry(name, CompressionLevel.NoCompression).Open();
                w.Write(bytes);
            }
        }
        File.Move(rewritten, path, overwrite: true);
    }

    private static byte[] Replace(byte[] bytes, string from, string to)
    {
        var text = Encoding.Latin1.GetString(bytes);
        Assert.Contains(from, text);
        return Encoding.Latin1.GetBytes(text.Replace(from, to));
    }

    /// <summary>Writes a safetensors file from a header object and its data section.</summary>
    private static void WriteSafetensors(string path, JsonObject header, byte[] data)
    {
        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        using var f = File.Create(path);
        f.Write(BitConverter.GetBytes((long)json.Length));
        f.Write(json);
        f.Write(data);
    }

    private static (JsonObject Header, byte[] Data) ReadSafetensors(string path)
    {
        var bytes = File.ReadAllBytes(path);
        int length = (int)BitConverter.ToInt64(bytes, 0);
        return (JsonNode.Parse(bytes.AsSpan(8, length))!.AsObject(), bytes[(8 + length)..]);
    }

    /// <summary>A field of the wrong type failed with a bare InvalidOperationException naming neither file nor field.</summary>
    [SharedDataFact]
    public void ConfigFieldOfTheWrongTypeNamesTheFileAndField()
    {
        using var temp = Copy(TinyBert, "pytorch_model.bin", "vocab.txt");
        var config = File.ReadAllText(Path.Combine(TinyBert, "config.json"));
        foreach (var (from, to, field, found) in new[]
                 {
                     ("\"hidden_size\": 32", "\"hidden_size\": \"32\"", "hidden_size", "\"32\""),
                     ("\"hidden_size\": 32", "\"hidden_size\": 32.5", "hidden_size", "32.5"),
                     ("\"layer_norm_eps\": 1e-12", "\"layer_norm_eps\": \"1e-12\"", "layer_norm_eps", "\"1e-12\""),
                     ("\"model_type\": \"bert\"", "\"model_type\": [\"roberta\"]", "model_type", "[\"roberta\"]"),
                 })
        {
            File.WriteAllText(temp.File("config.json"), config.Replace(from, to));
            var e = Assert.Throws<InvalidDataException>(() => ManagedBertSentenceEncoder.Load(temp.Path));
            Assert.StartsWith($"{temp.File("config.json")}: field '{field}': expected ", e.Message);
            Assert.EndsWith($"found {found}.", e.Message);
        }
        // A repeated key was a bare ArgumentException at first use.
        File.WriteAllText(temp.File("config.json"), config.Replace("\"hidden_size\": 32", "\"hidden_size\": 32, \"hidden_size\": 64"));
        Assert.StartsWith($"{temp.File("config.json")}: not valid JSON", Assert.Throws<InvalidDataException>(() => ManagedBertSentenceEncoder.Load(temp.Path)).Message);
    }

    /// <summary>A header of JSON null was a NullReferenceException; a repeated name a bare ArgumentException.</summary>
    [SharedDataFact]
    public void SafetensorsHeaderThatIsNullOrRepeatsANameNamesTheFile()
    {
        using var temp = Copy(GoldenBert, "config.json", "vocab.txt");
        var (header, data) = ReadSafetensors(Path.Combine(GoldenBert, "model.safetensors"));
        var path = temp.File("model.safetensors");
        foreach (var text in new[] { "null", "{\"a\": {}, \"a\": {}}" })
        {
            var json = Encoding.UTF8.GetBytes(text);
            File.WriteAllBytes(path, [.. BitConverter.GetBytes((long)json.Length), .. json, .. data]);
            var e = Assert.Throws<InvalidDataException>(() => ManagedBertSentenceEncoder.Load(temp.Path));
            Assert.StartsWith($"{path}: safetensors header: ", e.Message);
        }
        var first = header.First(kv => kv.Key != "__metadata__");
        var repeated = header.ToJsonString().Insert(1, $"\"{first.Key}\": {first.Value!.ToJsonString()}, ");
        var bytes = Encoding.UTF8.GetBytes(repeated);
        File.WriteAllBytes(path, [.. BitConverter.GetBytes((long)bytes.Length), .. bytes, .. data]);
        var repeatedError = Assert.Throws<InvalidDataException>(() => ManagedBertSentenceEncoder.Load(temp.Path));
        Assert.StartsWith($"{path}: safetensors header: not valid JSON", repeatedError.Message);
        Assert.Equal($"{path}: safetensors header: not valid JSON (key '{first.Key}' appears twice).", repeatedError.Message);
    }

    /// <summary>
    /// Checkpoints saved before transformers 4.31 keep the int64 embeddings.position_ids buffer; in safetensors it made
    /// the whole file fail ("dtype I64; only F32, F16 and BF16"). It is skipped now, as the pickle reader skips it.
    /// </summary>
    [SharedDataFact]
    public void SafetensorsInt64PositionIdsBufferIsSkipped()
    {
        using var temp = Copy(GoldenBert, "config.json", "vocab.txt", "tokenizer_config.json");
        var (header, data) = ReadSafetensors(Path.Combine(GoldenBert, "model.safetensors"));
        var positions = Enumerable.Range(0, 512).SelectMany(i => BitConverter.GetBytes((long)i)).ToArray();
        header["bert.embeddings.position_ids"] = new JsonObject
        {
            ["dtype"] = "I64", ["shape"] = new JsonArray(1, 512), ["data_offsets"] = new JsonArray(data.Length, data.Length + positions.Length),
        };
        WriteSafetensors(temp.File("model.safetensors"), header, [.. data, .. positions]);

        string[] texts = ["Hello world", "a charming and often affecting journey"];
        var expected = ManagedBertSentenceEncoder.Load(GoldenBert).Embed(texts);
        var actual = ManagedBertSentenceEncoder.Load(temp.Path).Embed(texts);
        for (int i = 0; i < texts.Length; i++) Assert.Equal(expected[i], actual[i]);
        // Reading the buffer as floats is still refused by name.
        var entry = SafetensorsReader.ReadHeader(temp.File("model.safetensors"))["bert.embeddings.position_ids"];
        Assert.Contains("tensor 'bert.embeddings.position_ids' has dtype I64", Assert.Throws<NotSupportedException>(() => SafetensorsReader.ReadFloat32(entry)).Message);
    }

    /// <summary>
    /// A half (or bfloat16) pytorch_model.bin had every weight skipped as "not FloatStorage", and failed saying
    /// 'embeddings.word_embeddings.weight is missing'. Its weights are widened now; a double checkpoint is named.
    /// </summary>
    [SharedDataFact]
    public void HalfAndBFloat16PickleCheckpointsAreWidened()
    {
        var original = BertWeights.FromHuggingFaceDirectory(TinyBert).Tensors;
        // The tiny checkpoint's only integer storage is position_ids' LongStorage, key '0'; every other storage is float.
        Assert.Contains("torch\nLongStorage\nq\u0004X\u0001\u0000\u0000\u00000", Encoding.Latin1.GetString(ReadEntry(Path.Combine(TinyBert, "pytorch_model.bin"), "data.pkl")));
        foreach (var (storage, narrow, widen) in new (string, Func<float, byte[]>, Func<float, float>)[]
                 {
                     ("HalfStorage", v => BitConverter.GetBytes((Half)v), v => (float)(Half)v),
                     ("BFloat16Storage", v => BitConverter.GetBytes((ushort)(BitConverter.SingleToInt32Bits(v) >>> 16)), v => BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(v) & unchecked((int)0xFFFF0000))),
                 })
        {
            using var temp = Copy(TinyBert, "config.json", "pytorch_model.bin", "vocab.txt");
            RewriteZip(temp.File("pytorch_model.bin"), (name, bytes) =>
                name.EndsWith("/data.pkl") ? Replace(bytes, "torch\nFloatStorage\n", $"torch\n{storage}\n")
                : name.Contains("/data/") && !name.EndsWith("/data/0") ? Enumerable.Range(0, bytes.Length / 4).SelectMany(i => narrow(BitConverter.ToSingle(bytes, 4 * i))).ToArray()
                : bytes);
            var loaded = BertWeights.FromHuggingFaceDirectory(temp.Path).Tensors;
            Assert.Equal(original.Keys.Order(), loaded.Keys.Order());
            foreach (var (name, (shape, values)) in original)
            {
                Assert.Equal(shape, loaded[name].Shape);
                Assert.Equal(values.Select(widen).ToArray(), loaded[name].Data);
            }
        }

        using var wide = Copy(TinyBert, "config.json", "pytorch_model.bin", "vocab.txt");
        RewriteZip(wide.File("pytorch_model.bin"), (name, bytes) => name.EndsWith("/data.pkl") ? Replace(bytes, "torch\nFloatStorage\n", "torch\nDoubleStorage\n") : bytes);
        var e = Assert.Throws<NotSupportedException>(() => ManagedBertSentenceEncoder.Load(wide.Path));
        Assert.StartsWith(wide.File("pytorch_model.bin") + ": tensor '", e.Message);
        Assert.Contains("is stored as DoubleStorage", e.Message);
    }

    /// <summary>torch ≥ 2.1 records its byte order; a big-endian save was read as little-endian (every weight garbage).</summary>
    [SharedDataFact]
    public void BigEndianPickleCheckpointIsRefused()
    {
        using var temp = Copy(TinyBert, "config.json", "pytorch_model.bin", "vocab.txt");
        RewriteZip(temp.File("pytorch_model.bin"), (_, bytes) => bytes, ("pytorch_model/byteorder", "big"u8.ToArray()));
        var e = Assert.Throws<NotSupportedException>(() => ManagedBertSentenceEncoder.Load(temp.Path));
        Assert.Equal($"{temp.File("pytorch_model.bin")}: byteorder is 'big'; only little-endian checkpoints are read.", e.Message);

        // "little", as torch writes on every common machine, loads as before.
        using var little = Copy(TinyBert, "config.json", "pytorch_model.bin", "vocab.txt");
        RewriteZip(little.File("pytorch_model.bin"), (_, bytes) => bytes, ("pytorch_model/byteorder", "little"u8.ToArray()));
        Assert.Equal(ManagedBertSentenceEncoder.Load(TinyBert).Embed(["Hello world"])[0], ManagedBertSentenceEncoder.Load(little.Path).Embed(["Hello world"])[0]);
    }

    private static byte[] ReadEntry(string zipPath, string suffix)
    {
        using var zip = ZipFile.OpenRead(zipPath);
        using var s = zip.Entries.Single(e => e.FullName.EndsWith(suffix)).Open();
        using var m = new MemoryStream();
        s.CopyTo(m);
        return m.ToArray();
    }
}
