using System.Buffers.Binary;
using System.Text.Json;
using System.Text.Json.Nodes;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Encoders;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Teacher;

/// <summary>
/// Checkpoint readers and the writer. Every load is all-or-nothing: each parameter must be found once, with the shape
/// the config implies; unknown tensors are an error (they usually mean the config and weights disagree).
/// <para><c>pytorch_model.bin</c> (a zip of Python pickles) is not read: unpickling safely needs a restricted pickle
/// VM that re-implements torch's storage rebuild functions, and every current HF checkpoint also ships safetensors.
/// The error tells the user how to convert.</para>
/// </summary>
internal static class TeacherCheckpoints
{
    public const string ConfigFile = "config.json", WeightsFile = "model.safetensors", IndexFile = "model.safetensors.index.json",
        GenerationConfigFile = "generation_config.json";

    /// <summary>
    /// Exists in a folder while <see cref="Save"/> replaces its files, one by one: a save that died or failed between two
    /// of them leaves it, and the load refuses the folder, whose files may then be of two models.
    /// </summary>
    public const string UnfinishedSaveFile = "retrikt-save-unfinished.txt";

    /// <summary>
    /// The config.json field in which a save records its tokenizer's <see cref="TeacherTokenizer.ContentHash"/>: the load
    /// refuses any other tokenizer beside the weights, whose ids would mean other tokens (a padded embedding table lets a
    /// smaller one fit, so sizes alone cannot tell).
    /// </summary>
    public const string TokenizerHashField = "retrikt_tokenizer_sha256";

    /// <summary>The tokenizer hash a save recorded in <paramref name="dir"/>'s config.json; null for a folder saved without one (or by another tool).</summary>
    public static string? SavedTokenizerHash(string dir)
    {
        var configPath = Path.Combine(dir, ConfigFile);
        return JsonFiles.ReadObject(configPath)[TokenizerHashField] switch
        {
            null => null,
            JsonValue v when v.TryGetValue<string>(out var hash) && hash.Length == 64 && hash.All(char.IsAsciiHexDigitLower) => hash,
            var node => throw new InvalidDataException($"{configPath}: field '{TokenizerHashField}' must be a SHA-256 in lower-case hex, found {node.ToJsonString()}."),
        };
    }

    /// <summary>Loads a HF directory (config.json + model.safetensors or a sharded index).</summary>
    public static (CausalLMModule Module, TeacherConfig Config) LoadHuggingFace(string dir, ScalarType dtype, Device device)
    {
        var unfinished = Path.Combine(dir, UnfinishedSaveFile);
        if (File.Exists(unfinished))
            throw new InvalidDataException($"{unfinished}: expected a finished save, found a save into this folder that stopped between its files " +
                $"({ConfigFile}, {WeightsFile} and the tokenizer may be of different models); save the model into it again, or delete the folder.");
        var configPath = Path.Combine(dir, ConfigFile);
        var config = TeacherConfig.FromHuggingFaceJson(configPath);
        var genConfig = Path.Combine(dir, GenerationConfigFile);
        if (File.Exists(genConfig) && TeacherConfig.TokenIds(JsonFiles.ReadObject(genConfig), "eos_token_id", genConfig) is { } eos)
            config = (config with { EosTokenIds = eos }).Validate(genConfig);

        var entries = new Dictionary<string, SafetensorsEntry>(StringComparer.Ordinal);
        var single = Path.Combine(dir, WeightsFile);
        var index = Path.Combine(dir, IndexFile);
        if (File.Exists(single))
        {
            // transformers loads model.safetensors when both are there, and so does this; an index beside it (a single-
            // file save over an older sharded one leaves the index) must list the same tensors, or one of them is stale.
            entries = Safetensors.ReadHeader(single);
            if (File.Exists(index)) CheckIndexBesideSingleFile(index, entries.Keys);
        }
        else if (File.Exists(index)) entries = ReadShardedHeaders(index, dir);
        else if (File.Exists(Path.Combine(dir, "pytorch_model.bin")) || File.Exists(Path.Combine(dir, "pytorch_model.bin.index.json")))
            throw new NotSupportedException($"{dir}: only pytorch_model.bin weights were found. Reading PyTorch pickles is not supported " +
                "(it needs a restricted pickle interpreter); convert once with Python: " +
                "`AutoModelForCausalLM.from_pretrained(dir).save_pretrained(out, safe_serialization=True)`.");
        else throw new FileNotFoundException($"{dir}: no weights found (expected {WeightsFile} or {IndexFile}).", single);

        var module = Create(config, dtype, device);
        try { Fill(module, entries.ToDictionary(kv => module.CanonicalName(kv.Key), kv => kv.Value, StringComparer.Ordinal), entries.Keys, Safetensors.ReadTensor, dir); }
        catch { module.Dispose(); throw; }
        return (module, config);
    }

    /// <summary>
    /// The headers of every shard a <c>model.safetensors.index.json</c> names, cross-checked against its <c>weight_map</c>:
    /// each tensor lies in exactly the shard the index names for it, and each tensor of a shard is in the index.
    /// A mismatch means a stale index or a shard of another save; loading it would mix or silently drop weights.
    /// </summary>
    /// <remarks>
    /// <c>metadata.total_size</c> is deliberately not checked against the indexed tensors' bytes: writers disagree on
    /// what it counts, so a rule of exact equality would refuse good folders. huggingface_hub's splitter (behind
    /// transformers' save_pretrained) adds each tensor's storage size (<c>untyped_storage().nbytes()</c>: the whole
    /// storage for a view, each shared storage once); older transformers' <c>shard_checkpoint</c> counted a bool as 1/8
    /// byte; mlx-lm adds the shard files' sizes, headers included. (bf16 and fp16 are no trouble: 2 bytes each in both
    /// the count and the file.) No real index was at hand to measure. The weight_map cross-check below, and each
    /// shard's own header check, are what protect the load.
    /// </remarks>
    private static Dictionary<string, SafetensorsEntry> ReadShardedHeaders(string index, string dir)
    {
        var expected = ReadWeightMap(index);

        var found = new Dictionary<string, List<SafetensorsEntry>>(StringComparer.Ordinal);
        foreach (var shard in expected.Values.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal))
        {
            var shardPath = Path.Combine(dir, shard);
            if (!File.Exists(shardPath))
            {
                var first = expected.Where(kv => kv.Value == shard).Select(kv => kv.Key).Order(StringComparer.Ordinal).First();
                throw new FileNotFoundException($"{index}: tensor '{first}': expected in shard '{shard}', found no such file ({shardPath}).", shardPath);
            }
            foreach (var (name, e) in Safetensors.ReadHeader(shardPath))
                (found.TryGetValue(name, out var list) ? list : found[name] = []).Add(e);
        }

        string Expected(string name) => expected.TryGetValue(name, out var s) ? $"shard '{s}'" : "no shard (weight_map does not list it)";
        foreach (var (name, list) in found.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            var shards = list.Select(e => Path.GetFileName(e.File)).ToList();
            if (shards.Count > 1)
                throw new InvalidDataException($"{index}: tensor '{name}': expected only in {Expected(name)}, " +
                    $"found in shards {string.Join(" and ", shards.Select(s => $"'{s}'"))}.");
            if (!expected.TryGetValue(name, out var shard) || shard != shards[0])
                throw new InvalidDataException($"{index}: tensor '{name}': expected in {Expected(name)}, found in shard '{shards[0]}'.");
        }
        foreach (var (name, shard) in expected.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            if (!found.ContainsKey(name))
                throw new InvalidDataException($"{index}: tensor '{name}': expected in shard '{shard}', found in no shard.");
        return found.ToDictionary(kv => kv.Key, kv => kv.Value[0], StringComparer.Ordinal);
    }

    /// <summary>An index's <c>weight_map</c>: tensor name to shard file name (a file in the index's folder).</summary>
    private static Dictionary<string, string> ReadWeightMap(string index)
    {
        var map = JsonFiles.ReadObject(index)["weight_map"] as JsonObject
            ?? throw new InvalidDataException($"{index}: field 'weight_map' is missing or not an object.");
        var expected = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, node) in map)
        {
            if (node is not JsonValue v || !v.TryGetValue<string>(out var shard) || shard.Length == 0 || Path.GetFileName(shard) != shard)
                throw new InvalidDataException($"{index}: tensor '{name}': expected a shard file name in this folder, found {node?.ToJsonString() ?? "null"}.");
            expected[name] = shard;
        }
        return expected;
    }

    /// <summary>
    /// An index beside <c>model.safetensors</c> lists exactly its tensors. Its shards need not be there (the single
    /// file is what loads); a tensor in one and not the other means one of the two files is of another save.
    /// </summary>
    private static void CheckIndexBesideSingleFile(string index, IEnumerable<string> singleFileTensors)
    {
        var listed = ReadWeightMap(index).Keys.ToHashSet(StringComparer.Ordinal);
        var present = singleFileTensors.ToHashSet(StringComparer.Ordinal);
        const string loads = $"{WeightsFile} beside it (which is what loads, as in transformers)";
        if (listed.Except(present).Order(StringComparer.Ordinal).FirstOrDefault() is { } onlyListed)
            throw new InvalidDataException($"{index}: tensor '{onlyListed}': expected in {loads}, found only in the index; one of the two is stale: remove it.");
        if (present.Except(listed).Order(StringComparer.Ordinal).FirstOrDefault() is { } onlyPresent)
            throw new InvalidDataException($"{index}: tensor '{onlyPresent}': expected in the index, found only in {loads}; one of the two is stale: remove it.");
    }

    public static CausalLMModule Create(TeacherConfig config, ScalarType dtype, Device device) => config.Architecture switch
    {
        TeacherArchitecture.Gpt2 => new Gpt2LMHeadModel(config, dtype, device),
        _ => new LlamaForCausalLM(config, dtype, device),
    };

    private static void Fill<T>(CausalLMModule module, Dictionary<string, T> byName, IEnumerable<string> originalKeys,
        Func<T, Tensor> read, string source) where T : notnull
    {
        var parameters = module.named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);
        foreach (var key in originalKeys)
        {
            var canonical = module.CanonicalName(key);
            if (!parameters.ContainsKey(canonical) && !module.IsIgnorableCheckpointKey(key) && !module.IsIgnorableCheckpointKey(canonical))
                throw new InvalidDataException($"{source}: unexpected tensor '{key}' that the config ({module.Config}) has no place for; the config and weights disagree.");
        }
        using var _ = no_grad();
        // A tied model takes its head from the embeddings and skips the checkpoint's lm_head.weight: one that differs
        // from them is the head of an untied model, and was dropped without a word (another model ran).
        string embedding = module.Config.Architecture == TeacherArchitecture.Gpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight";
        if (module.Config.TieWordEmbeddings && byName.TryGetValue("lm_head.weight", out var headEntry) && byName.TryGetValue(embedding, out var embeddingEntry))
        {
            using var scope = NewDisposeScope();
            var head = read(headEntry);
            var embed = read(embeddingEntry);
            if (!head.shape.SequenceEqual(embed.shape) || !head.to(ScalarType.Float32).eq(embed.to(ScalarType.Float32)).all().item<bool>())
                throw new InvalidDataException($"{source}: tensor 'lm_head.weight' differs from '{embedding}', but the config ties them " +
                    "(tie_word_embeddings true); the config and weights disagree (an untied model's config says tie_word_embeddings false).");
        }
        foreach (var (name, p) in parameters)
        {
            if (!byName.TryGetValue(name, out var entry))
                throw new InvalidDataException($"{source}: tensor '{name}' is missing (expected shape [{string.Join(",", p.shape)}] for {module.Config}).");
            using var scope = NewDisposeScope();
            var t = read(entry);
            if (!t.shape.SequenceEqual(p.shape))
                throw new InvalidDataException($"{source}: tensor '{name}' has shape [{string.Join(",", t.shape)}], but the config implies [{string.Join(",", p.shape)}].");
            // A damaged or badly converted checkpoint: every logit would be NaN and generation would repeat token 0.
            long nonFinite = t.isfinite().logical_not().sum().item<long>();
            if (nonFinite > 0)
                throw new InvalidDataException($"{source}: tensor '{name}' holds {nonFinite} NaN or infinite values of {t.numel()}; the checkpoint is damaged.");
            p.copy_(t.to(p.dtype, p.device));
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // llama2.c legacy ("version 0") export: 7 int32 header, then float32 tensors (see the stories260K README).

    /// <summary>Loads a llama2.c <c>.bin</c> checkpoint. wq/wk rows are permuted from interleaved-pair RoPE to HF rotate-half order.</summary>
    public static (CausalLMModule Module, TeacherConfig Config) LoadLlama2c(string path, ScalarType dtype, Device device)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"llama2.c checkpoint not found: {path}", path);
        using var fs = File.OpenRead(path);
        if (fs.Length < 28) throw new InvalidDataException($"{path}: truncated llama2.c checkpoint ({fs.Length} bytes; the header alone is 28).");
        var header = new byte[28];
        fs.ReadExactly(header);
        int H(int i) => BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(4 * i));
        if ((uint)H(0) == 0x616b3432u)
            throw new NotSupportedException($"{path}: llama2.c export version {H(1)} (magic 'ak42') is not supported; only the legacy version-0 export is read (export.py --version 0).");
        int dim = H(0), hidden = H(1), layers = H(2), heads = H(3), kvHeads = H(4), vocabSigned = H(5), seqLen = H(6);
        string[] fields = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"];
        for (int i = 0; i < 7; i++)
            if (i != 5 && (H(i) <= 0 || H(i) > 1 << 20)) throw new InvalidDataException($"{path}: header field '{fields[i]}' = {H(i)} is implausible; not a llama2.c checkpoint.");
        if (dim % heads != 0) throw new InvalidDataException($"{path}: dim {dim} is not divisible by n_heads {heads}.");
        if (vocabSigned == 0 || vocabSigned == int.MinValue || Math.Abs(vocabSigned) > 1 << 20)
            throw new InvalidDataException($"{path}: header field 'vocab_size' = {vocabSigned} is implausible; not a llama2.c checkpoint.");
        bool shared = vocabSigned > 0;
        int vocab = Math.Abs(vocabSigned), hs = dim / heads, kvDim = kvHeads * hs;
        var config = new TeacherConfig
        {
            ModelType = "llama", VocabSize = vocab, HiddenSize = dim, IntermediateSize = hidden, NumLayers = layers, NumHeads = heads,
            NumKeyValueHeads = kvHeads, HeadDim = hs, MaxPositions = seqLen, NormEpsilon = 1e-5, RopeTheta = 10000,
            TieWordEmbeddings = shared, BosTokenId = 1, EosTokenIds = [2],
        }.Validate(path);

        long L = layers;
        var blocks = new List<(string Name, long[] Shape)>
        {
            ("emb", [vocab, dim]), ("rms_att", [L, dim]), ("wq", [L, dim, dim]), ("wk", [L, kvDim, dim]), ("wv", [L, kvDim, dim]),
            ("wo", [L, dim, dim]), ("rms_ffn", [L, dim]), ("w1", [L, hidden, dim]), ("w2", [L, dim, hidden]), ("w3", [L, hidden, dim]),
            ("rms_final", [dim]), ("freq_cis", [2, seqLen, hs / 2]),
        };
        if (!shared) blocks.Add(("wcls", [vocab, dim]));
        long expected = 28 + 4 * blocks.Sum(b => b.Shape.Aggregate(1L, (a, x) => a * x));
        if (fs.Length != expected)
            throw new InvalidDataException($"{path}: {fs.Length} bytes, but the header ({dim}/{hidden}/{layers}/{heads}/{kvHeads}/{vocabSigned}/{seqLen}) implies {expected}; the file is {(fs.Length < expected ? "truncated" : "not this layout")}.");

        var raw = new Dictionary<string, Tensor>();
        var module = Create(config, dtype, device);
        try
        {
            using var scope = NewDisposeScope();
            foreach (var (name, shape) in blocks)
            {
                var t = empty(shape, ScalarType.Float32, CPU);
                fs.ReadExactly(t.bytes);
                raw[name] = t;
            }
            // Interleaved pairs (2j, 2j+1) inside each head → halves (j, j + hs/2), as llama2.c export.py permutes for HF.
            Tensor Permute(Tensor w, int nHeads) => w.view(nHeads, hs / 2, 2, dim).transpose(1, 2).reshape(nHeads * hs, dim);
            var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal)
            {
                ["model.embed_tokens.weight"] = raw["emb"], ["model.norm.weight"] = raw["rms_final"],
            };
            if (!shared) tensors["lm_head.weight"] = raw["wcls"];
            for (int i = 0; i < layers; i++)
            {
                string p = $"model.layers.{i}.";
                tensors[p + "input_layernorm.weight"] = raw["rms_att"][i];
                tensors[p + "post_attention_layernorm.weight"] = raw["rms_ffn"][i];
                tensors[p + "self_attn.q_proj.weight"] = Permute(raw["wq"][i], heads);
                tensors[p + "self_attn.k_proj.weight"] = Permute(raw["wk"][i], kvHeads);
                tensors[p + "self_attn.v_proj.weight"] = raw["wv"][i];
                tensors[p + "self_attn.o_proj.weight"] = raw["wo"][i];
                tensors[p + "mlp.gate_proj.weight"] = raw["w1"][i];
                tensors[p + "mlp.down_proj.weight"] = raw["w2"][i];
                tensors[p + "mlp.up_proj.weight"] = raw["w3"][i];
            }
            Fill(module, tensors, tensors.Keys, t => t, path);
        }
        catch { module.Dispose(); throw; }
        return (module, config);
    }

    /// <summary>
    /// Writes model.safetensors, config.json and the tokenizer's files (each atomically) as one save: while they are
    /// replaced, <see cref="UnfinishedSaveFile"/> marks the folder, so that a save stopped between two files (killed, a
    /// full disk, a tokenizer file gone) leaves a folder the load refuses rather than one model's config beside another's
    /// weights or tokenizer. A <c>model.safetensors.index.json</c> in the folder (of an earlier sharded save) is deleted:
    /// it describes other weights, and the load would refuse the folder for it. So are the files of another tokenizer
    /// that the load would read in place of the one saved, or with it (<see cref="TeacherTokenizer.CopyTo"/>); a
    /// <c>generation_config.json</c> there is kept for other tools, given this model's special token ids (the load takes
    /// its EOS over config.json's).
    /// </summary>
    public static void Save(CausalLMModule module, TeacherTokenizer? tokenizer, string dir)
    {
        Directory.CreateDirectory(dir);
        var unfinished = Path.Combine(dir, UnfinishedSaveFile);
        bool unfinishedBefore = File.Exists(unfinished);
        AtomicFile.WriteAllText(unfinished, $"A save into this folder started at {DateTime.UtcNow:O} and has not finished.\n");
        try
        {
            Safetensors.Write(Path.Combine(dir, WeightsFile), module.named_parameters().Select(p => (p.name, (Tensor)p.parameter)));
        }
        catch
        {
            // The weights' own write is atomic: nothing in the folder was replaced, it is as it was (an earlier save's
            // marker stays).
            if (!unfinishedBefore) File.Delete(unfinished);
            throw;
        }
        File.Delete(Path.Combine(dir, IndexFile));
        var config = module.Config.ToHuggingFaceJson();
        if (tokenizer is not null) config[TokenizerHashField] = tokenizer.ContentHash;
        AtomicFile.WriteAllText(Path.Combine(dir, ConfigFile), config.ToJsonString(Indented));
        GiveGenerationConfigTheIds(dir, config);
        tokenizer?.CopyTo(dir);
        File.Delete(unfinished);
    }

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>A <c>generation_config.json</c> in <paramref name="dir"/> (kept for other tools) takes the special token ids of <paramref name="config"/>, which the load reads its EOS from.</summary>
    private static void GiveGenerationConfigTheIds(string dir, JsonObject config)
    {
        var genConfigPath = Path.Combine(dir, GenerationConfigFile);
        if (!File.Exists(genConfigPath)) return;
        var genConfig = JsonFiles.ReadObject(genConfigPath);
        foreach (var field in new[] { "bos_token_id", "eos_token_id", "pad_token_id" }) genConfig[field] = config[field]?.DeepClone();
        AtomicFile.WriteAllText(genConfigPath, genConfig.ToJsonString(Indented));
    }

    /// <summary>
    /// Moves the files of a finished <see cref="Save"/> in <paramref name="from"/> (every file there but
    /// <paramref name="heldBack"/>) into <paramref name="to"/>, leaving <paramref name="to"/> as a save into it would: the
    /// marker while files are replaced, an index of another save and another tokenizer's files deleted, a
    /// generation_config.json given the saved ids. Each move is a rename, so a save written beside a checkpoint replaces
    /// it in moments, and a move that was stopped can be run again: files already moved are no longer in <paramref name="from"/>.
    /// </summary>
    public static void MoveSave(string from, string to, params string[] heldBack)
    {
        var unfinished = Path.Combine(to, UnfinishedSaveFile);
        AtomicFile.WriteAllText(unfinished, $"A save into this folder started at {DateTime.UtcNow:O} and has not finished.\n");
        var files = Directory.GetFiles(from).Select(Path.GetFileName).OfType<string>()
            .Where(name => !heldBack.Contains(name) && name != UnfinishedSaveFile).Order(StringComparer.Ordinal).ToList();
        // Before the moves, so that a move run again (with only the files not yet moved) has nothing left to delete.
        File.Delete(Path.Combine(to, IndexFile));
        TeacherTokenizer.RemoveShadowingFiles(to, files.ToHashSet(StringComparer.Ordinal));
        foreach (var name in files) File.Move(Path.Combine(from, name), Path.Combine(to, name), overwrite: true);
        GiveGenerationConfigTheIds(to, JsonFiles.ReadObject(Path.Combine(to, ConfigFile)));
        File.Delete(unfinished);
    }
}
