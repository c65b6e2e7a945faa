using System.Text;
using System.Text.Json.Nodes;
using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Tests.Infrastructure;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Tests.Teacher;

/// <summary>
/// Checkpoints that used to load although damaged or inconsistent: safetensors offsets that overlap, leave holes or
/// stop short of the data section, and sharded indexes that disagree with their shards. Each is a real checkpoint
/// rewritten; each refusal is one line naming the file, the tensor(s), and what was expected and found.
/// </summary>
public sealed class CheckpointIntegrityTests : IDisposable
{
    private readonly TempDir _folder = new("retrikt-integrity-");

    public void Dispose() => _folder.Dispose();

    private static string Models(params string[] p) => TeacherGoldenTests.Models(p);

    private const string Shard1 = "model-00001-of-00002.safetensors", Shard2 = "model-00002-of-00002.safetensors";
    private const string IndexFile = "model.safetensors.index.json";

    /// <summary>A copy of a real HF folder's config and weights (writable).</summary>
    private string CopyModel(string model, string name)
    {
        var dir = Path.Combine(_folder.Path, name);
        Directory.CreateDirectory(dir);
        foreach (var file in new[] { "config.json", "model.safetensors" })
        {
            File.Copy(Models(model, file), Path.Combine(dir, file));
            File.SetAttributes(Path.Combine(dir, file), FileAttributes.Normal);
        }
        return dir;
    }

    /// <summary>The JSON header and the data section of a safetensors file.</summary>
    private static (JsonObject Header, byte[] Data) ReadRaw(string path)
    {
        var bytes = File.ReadAllBytes(path);
        long headerLength = BitConverter.ToInt64(bytes, 0);
        return (JsonNode.Parse(bytes.AsSpan(8, (int)headerLength))!.AsObject(), bytes[(8 + (int)headerLength)..]);
    }

    private static void WriteRaw(string path, JsonObject header, byte[] data)
    {
        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        using var fs = File.Create(path);
        fs.Write(BitConverter.GetBytes((long)json.Length));
        fs.Write(json);
        fs.Write(data);
    }

    private static long[] Offsets(JsonObject header, string name) => header[name]!["data_offsets"]!.AsArray().Select(x => x!.GetValue<long>()).ToArray();

    private static void SetOffsets(JsonObject header, string name, long begin, long end) => header[name]!["data_offsets"] = new JsonArray(begin, end);

    private static float[] Logits(TeacherModel m, int[] ids)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        return m.Forward(m.Embed(tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0))).Logits.flatten().data<float>().ToArray();
    }

    private static string Refused(string dir) => Assert.Throws<InvalidDataException>(() => TeacherModel.Load(dir)).Message;

    [SharedDataFact]
    public void TwoTensorsSharingBytesAreRefused()
    {
        // Before: the folder loaded; layer 0's post-attention norm silently took the input norm's values.
        var dir = CopyModel("llama2c-stories260K-hf", "overlap");
        var path = Path.Combine(dir, "model.safetensors");
        var (header, data) = ReadRaw(path);
        const string shared = "model.layers.0.input_layernorm.weight", moved = "model.layers.0.post_attention_layernorm.weight";
        var range = Offsets(header, shared);
        SetOffsets(header, moved, range[0], range[1]);
        WriteRaw(path, header, data);
        Assert.Equal($"{path}: tensor '{moved}' data [{range[0]}, {range[1]}) overlaps tensor '{shared}' data [{range[0]}, {range[1]}); " +
                     $"expected it to begin at {range[1]}, found {range[0]}.", Refused(dir));
    }

    [SharedDataFact]
    public void BytesThatBelongToNoTensorAreRefused()
    {
        // Before: 256 stray bytes between two tensors loaded without a word (the reference library refuses the file).
        var dir = CopyModel("llama2c-stories260K-hf", "hole");
        var path = Path.Combine(dir, "model.safetensors");
        var (header, data) = ReadRaw(path);
        const string next = "model.layers.0.input_layernorm.weight";
        long gapAt = Offsets(header, next)[0];
        foreach (var (name, _) in header.ToList())
            if (name != "__metadata__" && Offsets(header, name) is var o && o[0] >= gapAt) SetOffsets(header, name, o[0] + 256, o[1] + 256);
        WriteRaw(path, header, [.. data[..(int)gapAt], .. new byte[256], .. data[(int)gapAt..]]);
        Assert.Equal($"{path}: data bytes [{gapAt}, {gapAt + 256}) belong to no tensor (a hole before tensor '{next}'); " +
                     $"expected it to begin at {gapAt}, found {gapAt + 256}.", Refused(dir));
    }

    [SharedDataFact]
    public void ADataSectionLongerThanItsTensorsIsRefused()
    {
        // Before: a file with 1000 trailing bytes (e.g. an interrupted overwrite of a larger file) loaded without a word.
        var dir = CopyModel("llama2c-stories260K-hf", "trailing");
        var path = Path.Combine(dir, "model.safetensors");
        var (header, data) = ReadRaw(path);
        var last = header.Where(kv => kv.Key != "__metadata__").MaxBy(kv => Offsets(header, kv.Key)[1]).Key;
        WriteRaw(path, header, [.. data, .. new byte[1000]]);
        Assert.Equal($"{path}: data bytes [{data.Length}, {data.Length + 1000}) belong to no tensor (after the last tensor '{last}'); " +
                     $"expected a data section of {data.Length} bytes, found {data.Length + 1000}.", Refused(dir));
    }

    [SharedDataFact]
    public void AShapeWhoseByteCountOverflowsIsRefused()
    {
        // Before: 2^62 + 64 floats are 2^64 + 256 bytes, which wrapped to the tensor's real 256 bytes and passed the header
        // check; allocating the tensor then failed in libtorch with a native stack trace.
        var dir = CopyModel("llama2c-stories260K-hf", "overflow");
        var path = Path.Combine(dir, "model.safetensors");
        var (header, data) = ReadRaw(path);
        const string name = "model.norm.weight";
        var o = Offsets(header, name);
        header[name]!["shape"] = new JsonArray((1L << 62) + (o[1] - o[0]) / 4);
        WriteRaw(path, header, data);
        Assert.Equal($"{path}: tensor '{name}' has {o[1] - o[0]} bytes, but shape [{(1L << 62) + (o[1] - o[0]) / 4}] of F32 needs more than {long.MaxValue} bytes.", Refused(dir));
    }

    /// <summary>Splits a real checkpoint's bytes into two shards (alternate tensors) plus an index, as save_pretrained does.</summary>
    private string Shard(string model, string name)
    {
        var dir = CopyModel(model, name);
        var single = Path.Combine(dir, "model.safetensors");
        var (header, data) = ReadRaw(single);
        File.Delete(single);
        var names = header.Select(kv => kv.Key).Where(k => k != "__metadata__").Order(StringComparer.Ordinal).ToList();
        var map = new JsonObject();
        for (int s = 0; s < 2; s++)
        {
            var part = new JsonObject { ["__metadata__"] = new JsonObject { ["format"] = "pt" } };
            var bytes = new List<byte>();
            foreach (var tensorName in names.Where((_, i) => i % 2 == s))
            {
                var o = Offsets(header, tensorName);
                var entry = header[tensorName]!.DeepClone().AsObject();
                entry["data_offsets"] = new JsonArray(bytes.Count, bytes.Count + (o[1] - o[0]));
                bytes.AddRange(data[(int)o[0]..(int)o[1]]);
                part[tensorName] = entry;
                map[tensorName] = s == 0 ? Shard1 : Shard2;
            }
            WriteRaw(Path.Combine(dir, s == 0 ? Shard1 : Shard2), part, bytes.ToArray());
        }
        WriteIndex(dir, map);
        return dir;
    }

    private static void WriteIndex(string dir, JsonObject map) =>
        File.WriteAllText(Path.Combine(dir, IndexFile), new JsonObject { ["metadata"] = new JsonObject(), ["weight_map"] = map.DeepClone() }.ToJsonString());

    private static JsonObject WeightMap(string dir) => JsonNode.Parse(File.ReadAllText(Path.Combine(dir, IndexFile)))!["weight_map"]!.AsObject();

    [SharedDataFact]
    public void ARealCheckpointSplitIntoTwoShardsGivesTheSameLogits()
    {
        foreach (var model in new[] { "llama2c-stories260K-hf", "hf-tiny-random-gpt2" })
        {
            using var single = TeacherModel.Load(Models(model));
            var dir = Shard(model, "split-" + model);
            Assert.False(File.Exists(Path.Combine(dir, "model.safetensors")));
            using var sharded = TeacherModel.Load(dir);
            Assert.Equal(single.ContentHash, sharded.ContentHash);
            Assert.Equal(Logits(single, [1, 7, 42, 99]), Logits(sharded, [1, 7, 42, 99]));
        }
    }

    /// <summary>A sharded copy of stories260K, its index path, and a tensor the index places in the second shard.</summary>
    private (string Dir, string Index, string Name) Sharded(string name)
    {
        var dir = Shard("llama2c-stories260K-hf", name);
        return (dir, Path.Combine(dir, IndexFile), WeightMap(dir).First(kv => kv.Value!.GetValue<string>() == Shard2).Key);
    }

    [SharedDataFact]
    public void AnIndexNamingTheWrongShardIsRefused()
    {
        // Before: loaded from whichever shard held the tensor.
        var (dir, index, name) = Sharded("wrong-shard");
        var map = WeightMap(dir);
        map[name] = Shard1;
        WriteIndex(dir, map);
        Assert.Equal($"{index}: tensor '{name}': expected in shard '{Shard1}', found in shard '{Shard2}'.", Refused(dir));
    }

    [SharedDataFact]
    public void AShardTensorMissingFromTheIndexIsRefused()
    {
        // Before: loaded although the index does not list it.
        var (dir, index, name) = Sharded("unlisted");
        var map = WeightMap(dir);
        map.Remove(name);
        WriteIndex(dir, map);
        Assert.Equal($"{index}: tensor '{name}': expected in no shard (weight_map does not list it), found in shard '{Shard2}'.", Refused(dir));
    }

    [SharedDataFact]
    public void AnIndexedTensorThatNoShardHoldsIsRefused()
    {
        // Before: ignored (stories260K ties its head, so a listed lm_head.weight that is nowhere went unnoticed).
        var (dir, index, _) = Sharded("phantom");
        var map = WeightMap(dir);
        map["lm_head.weight"] = Shard1;
        WriteIndex(dir, map);
        Assert.Equal($"{index}: tensor 'lm_head.weight': expected in shard '{Shard1}', found in no shard.", Refused(dir));
    }

    [SharedDataFact]
    public void ATensorInTwoShardsIsRefusedNamingTheIndex()
    {
        // Before: refused, but naming neither the index nor the shard the tensor belongs to.
        var (dir, index, name) = Sharded("twice");
        var (header, data) = ReadRaw(Path.Combine(dir, Shard2));
        var (other, otherData) = ReadRaw(Path.Combine(dir, Shard1));
        var range = Offsets(header, name);
        var copy = header[name]!.DeepClone().AsObject();
        copy["data_offsets"] = new JsonArray(otherData.Length, otherData.Length + (range[1] - range[0]));
        other[name] = copy;
        WriteRaw(Path.Combine(dir, Shard1), other, [.. otherData, .. data[(int)range[0]..(int)range[1]]]);
        Assert.Equal($"{index}: tensor '{name}': expected only in shard '{Shard2}', found in shards '{Shard1}' and '{Shard2}'.", Refused(dir));
    }

    /// <summary>
    /// A folder with both model.safetensors and model.safetensors.index.json (a single-file save over an older sharded
    /// one leaves the index behind): the single file loads, as in transformers, but only while the index lists the same
    /// tensors; an index of another model was ignored without a word.
    /// </summary>
    [SharedDataFact]
    public void ASingleFileBesideAnIndexOfOtherTensorsIsRefused()
    {
        using var single = TeacherModel.Load(Models("llama2c-stories260K-hf"));
        var dir = CopyModel("llama2c-stories260K-hf", "both");
        var (header, _) = ReadRaw(Path.Combine(dir, "model.safetensors"));
        var map = new JsonObject();
        foreach (var name in header.Select(kv => kv.Key).Where(k => k != "__metadata__").Order(StringComparer.Ordinal)) map[name] = Shard1;
        WriteIndex(dir, map); // the same tensors (shards gone): loads the single file
        using (var loaded = TeacherModel.Load(dir)) Assert.Equal(single.ContentHash, loaded.ContentHash);

        var index = Path.Combine(dir, IndexFile);
        map["lm_head.weight"] = Shard2;
        WriteIndex(dir, map);
        Assert.Equal($"{index}: tensor 'lm_head.weight': expected in model.safetensors beside it (which is what loads, as in transformers), " +
                     "found only in the index; one of the two is stale: remove it.", Refused(dir));

        map.Remove("lm_head.weight");
        var dropped = map.First().Key;
        map.Remove(dropped);
        WriteIndex(dir, map);
        Assert.Equal($"{index}: tensor '{dropped}': expected in the index, found only in model.safetensors beside it (which is what loads, " +
                     "as in transformers); one of the two is stale: remove it.", Refused(dir));

        // SaveCheckpoint writes model.safetensors and deletes the index beside it, which describes another save.
        single.SaveCheckpoint(dir);
        Assert.False(File.Exists(index));
        using (var saved = TeacherModel.Load(dir)) Assert.Equal(single.ContentHash, saved.ContentHash);
    }

    [SharedDataFact]
    public void AMissingShardFileIsRefusedNamingATensor()
    {
        // Before: refused, but naming no tensor.
        var (dir, index, _) = Sharded("missing-shard");
        var first = WeightMap(dir).Where(kv => kv.Value!.GetValue<string>() == Shard1).Select(kv => kv.Key).Order(StringComparer.Ordinal).First();
        File.Delete(Path.Combine(dir, Shard1));
        Assert.Equal($"{index}: tensor '{first}': expected in shard '{Shard1}', found no such file ({Path.Combine(dir, Shard1)}).",
            Assert.Throws<FileNotFoundException>(() => TeacherModel.Load(dir)).Message);
    }
}
