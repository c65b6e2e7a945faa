using System.Text.Json.Nodes;
using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Tests.Infrastructure;
using TorchSharp;
using static TorchSharp.torch;

namespace RetriKT.MLNet.Tests.Teacher;

/// <summary>Checkpoint round trips and every bad-input path: each a clear exception naming the file, tensor or field.</summary>
public sealed class TeacherLoadingTests : IDisposable
{
    private readonly TempDir _folder = new("retrikt-teacher-");
    private string Temp => _folder.Path;

    public void Dispose() => _folder.Dispose();

    private static string Models(params string[] p) => TeacherGoldenTests.Models(p);

    private string CopyDir(string source, string name)
    {
        var target = Path.Combine(Temp, name);
        Directory.CreateDirectory(target);
        foreach (var f in Directory.GetFiles(source)) File.Copy(f, Path.Combine(target, Path.GetFileName(f)));
        foreach (var f in Directory.GetFiles(target)) File.SetAttributes(f, FileAttributes.Normal);
        return target;
    }

    private static float[] Logits(TeacherModel m, int[] ids)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        return m.Forward(m.Embed(tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0))).Logits.flatten().data<float>().ToArray();
    }

    [SharedDataFact]
    public void SavedCheckpointRoundTripsWeightsTokenizerAndHash()
    {
        using var original = TeacherModel.Load(Models("llama2c-stories260K", "stories260K.bin"));
        var dir = Path.Combine(Temp, "saved");
        original.SaveCheckpoint(dir);
        Assert.True(File.Exists(Path.Combine(dir, "config.json")));
        Assert.True(File.Exists(Path.Combine(dir, "tokenizer.bin")));
        Assert.Empty(Directory.GetFiles(dir, "*.tmp"));
        using var reloaded = TeacherModel.Load(dir);
        Assert.Equal(original.ContentHash, reloaded.ContentHash);
        Assert.Equal(64, original.ContentHash.Length);
        Assert.Equal(original.ParameterCount, reloaded.ParameterCount);
        Assert.Equal(Logits(original, [1, 403, 407]), Logits(reloaded, [1, 403, 407]));
        Assert.Equal(original.Tokenizer!.Encode("Once upon a time"), reloaded.Tokenizer!.Encode("Once upon a time"));

        // The HF conversion of the same weights is a different file but the same tensors.
        using var hf = TeacherModel.Load(Models("llama2c-stories260K-hf"));
        Assert.Equal(original.ParameterCount, hf.ParameterCount);

        // bfloat16 loading converts on the way in and still produces the same greedy start.
        using var bf16 = TeacherModel.Load(dir, new TeacherLoadOptions { DType = ScalarType.BFloat16 });
        Assert.Equal(ScalarType.BFloat16, bf16.NamedParameters().First().Parameter.dtype);
        var g = bf16.Generate(new GenerationRequest { PromptIds = [[1]], MaxNewTokens = 3 });
        Assert.Equal(new[] { 403, 407, 261 }, g.Sequences[0].TokenIds);
    }

    /// <summary>
    /// SaveCheckpoint replaces config.json, model.safetensors and the tokenizer's files one by one. A save that stopped
    /// between them (here: a folder stood where the tokenizer's file goes; equally a kill or a full disk) left
    /// GPT-2's config and weights beside the llama2.c tokenizer of the save before, and the folder loaded as that mix
    /// without a word (512 tokens fit GPT-2's 1000). It is refused until a save into it finishes.
    /// </summary>
    [SharedDataFact]
    public void ASaveStoppedBetweenItsFiles_LeavesAFolderThatIsRefusedUntilASaveFinishes()
    {
        var dir = Path.Combine(Temp, "saved");
        using var llama = TeacherModel.Load(Models("llama2c-stories260K", "stories260K.bin"));
        llama.SaveCheckpoint(dir);

        using var gpt2 = TeacherModel.Load(Models("hf-tiny-random-gpt2"), new TeacherLoadOptions { TokenizerPath = Models("hf-tiny-random-gpt2", "tokenizer.json") });
        var inTheWay = Directory.CreateDirectory(Path.Combine(dir, "tokenizer.json"));
        Assert.ThrowsAny<IOException>(() => gpt2.SaveCheckpoint(dir));

        var unfinished = Path.Combine(dir, "retrikt-save-unfinished.txt");
        Assert.Equal($"{unfinished}: expected a finished save, found a save into this folder that stopped between its files " +
                     "(config.json, model.safetensors and the tokenizer may be of different models); save the model into it again, or delete the folder.",
            Assert.Throws<InvalidDataException>(() => TeacherModel.Load(dir)).Message);

        inTheWay.Delete();
        llama.SaveCheckpoint(dir);
        Assert.False(File.Exists(unfinished));
        using var reloaded = TeacherModel.Load(dir);
        Assert.Equal(llama.ContentHash, reloaded.ContentHash);
    }

    /// <summary>
    /// SaveCheckpoint into the folder of another model left that model's tokenizer.json, tokenizer_config.json and
    /// generation_config.json, which Load reads before the saved tokenizer.bin and over the saved EOS: a llama2.c
    /// model saved there came back with GPT-2's tokenizer (1000 tokens for 512) and EOS 98 for 2, without a word.
    /// </summary>
    [SharedDataFact]
    public void ASaveIntoTheFolderOfAnotherModel_LoadsBackAsTheModelSaved()
    {
        var dir = CopyDir(Models("hf-tiny-random-gpt2"), "other-model");
        using var llama = TeacherModel.Load(Models("llama2c-stories260K", "stories260K.bin"));
        using var saved = TeacherModel.Create(llama.Config with { VocabSize = 1000 }, llama.Tokenizer, seed: 3);
        saved.SaveCheckpoint(dir);

        using var back = TeacherModel.Load(dir);
        Assert.Equal(saved.ContentHash, back.ContentHash);
        Assert.Equal([2], back.Config.EosTokenIds);
        Assert.Equal(("llama2c", 512), (back.Tokenizer!.Kind, back.Tokenizer.VocabSize));
        Assert.Equal(llama.Tokenizer!.Encode("Once upon a time"), back.Tokenizer.Encode("Once upon a time"));
        Assert.True(File.Exists(Path.Combine(dir, "generation_config.json")));   // kept for other tools, with the saved EOS
    }

    /// <summary>
    /// A checkpoint loaded with another tokenizer than the one it was saved with (TokenizerPath, or files replaced in its
    /// folder) was refused only when that tokenizer had more tokens than the embedding table: a smaller one, or one of the
    /// same size with other merges, loaded and encoded text with ids that mean other tokens to the model. A save now
    /// records its tokenizer's hash in config.json and the load refuses any other tokenizer, in one line naming it with
    /// both hashes; a llama2.c checkpoint (whose tokenizer has exactly its vocabulary) refuses one of another size.
    /// </summary>
    [SharedDataFact]
    public void ATokenizerOtherThanTheOneSavedWithTheModel_IsRefusedWhateverItsSize()
    {
        var texts = TeacherPretrainingTests.Reviews(120);
        var own = ByteLevelBpeTrainer.Train(texts.Take(60), 400, Path.Combine(Temp, "tok-own"));
        ByteLevelBpeTrainer.Train(texts.Take(60), 300, Path.Combine(Temp, "tok-smaller"));
        ByteLevelBpeTrainer.Train(texts.Skip(60), 400, Path.Combine(Temp, "tok-other-merges"));
        var config = new TeacherConfig { ModelType = "llama", VocabSize = 400, HiddenSize = 32, IntermediateSize = 64, NumLayers = 1, NumHeads = 2,
            NumKeyValueHeads = 2, HeadDim = 16, MaxPositions = 64, TieWordEmbeddings = true, BosTokenId = own.BosId, EosTokenIds = [own.EosId!.Value] };
        var dir = Path.Combine(Temp, "saved");
        using (var model = TeacherModel.Create(config, own, seed: 1)) model.SaveCheckpoint(dir);

        foreach (var foreign in new[] { "tok-smaller", "tok-other-merges" })
        {
            var path = Path.Combine(Temp, foreign);
            var e = Assert.Throws<InvalidDataException>(() => TeacherModel.Load(dir, new TeacherLoadOptions { TokenizerPath = path }));
            Assert.StartsWith($"{path}: expected the tokenizer {dir} was saved with (sha256 ", e.Message);
            Assert.DoesNotContain('\n', e.Message);
        }
        // The same files in their folder, or in the checkpoint's: the same tokenizer.
        using (var again = TeacherModel.Load(dir, new TeacherLoadOptions { TokenizerPath = Path.Combine(Temp, "tok-own") })) Assert.Equal(400, again.Tokenizer!.VocabSize);
        using (var beside = TeacherModel.Load(dir)) Assert.Equal(own.Encode("a gorgeous film"), beside.Tokenizer!.Encode("a gorgeous film"));

        // Another tokenizer's files copied over the checkpoint's own are refused the same way.
        foreach (var file in new[] { "vocab.json", "merges.txt" }) File.Copy(Path.Combine(Temp, "tok-other-merges", file), Path.Combine(dir, file), overwrite: true);
        Assert.StartsWith($"{dir}: expected the tokenizer", Assert.Throws<InvalidDataException>(() => TeacherModel.Load(dir)).Message);

        // llama2.c: a 300-token tokenizer beside a 512-token model.
        var small = Assert.Throws<InvalidDataException>(() => TeacherModel.Load(Models("llama2c-stories260K", "stories260K.bin"),
            new TeacherLoadOptions { TokenizerPath = Path.Combine(Temp, "tok-smaller") }));
        Assert.Contains("300 tokens", small.Message);
        Assert.Contains("512", small.Message);
    }

    /// <summary>
    /// A tokenizer read from a file of another name (<c>TokenizerPath = ".../gpt2-tiny.json"</c>) was saved under that
    /// name, which Load does not look for: the saved folder loaded back without a tokenizer, without a word.
    /// </summary>
    [SharedDataFact]
    public void ATokenizerReadFromAFileOfAnotherName_IsSavedUnderTheNameLoadLooksFor()
    {
        var source = CopyDir(Models("hf-tiny-random-gpt2"), "renamed-tokenizer");
        var renamed = Path.Combine(source, "gpt2-tiny.json");
        File.Move(Path.Combine(source, "tokenizer.json"), renamed);
        using var model = TeacherModel.Load(Models("hf-tiny-random-gpt2"), new TeacherLoadOptions { TokenizerPath = renamed });
        var dir = Path.Combine(Temp, "saved");
        model.SaveCheckpoint(dir);

        using var back = TeacherModel.Load(dir);
        Assert.NotNull(back.Tokenizer);
        Assert.Equal(model.Tokenizer!.Encode("Hello world, once upon a time"), back.Tokenizer.Encode("Hello world, once upon a time"));
        Assert.Equal(model.Tokenizer.EosId, back.Tokenizer.EosId);
    }

    /// <summary>
    /// ContentHash and SaveCheckpoint disposed only the last tensor of <c>p.detach().to(CPU).contiguous()</c>: two handles
    /// per parameter were left to the finalizer (stories260K: 94 a hash, 94 a save; on a GPU each held a CPU copy of the
    /// weights). The pretrainer takes both at every checkpoint.
    /// </summary>
    [SharedDataFact]
    public void ContentHashAndSaveCheckpointLeaveNoTensorAlive()
    {
        long Live() => DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        using var model = TeacherModel.Load(Models("llama2c-stories260K", "stories260K.bin"));
        var dir = Path.Combine(Temp, "saved");
        _ = model.ContentHash;
        model.SaveCheckpoint(dir);
        long before = Live();
        model.InvalidateContentHash();
        _ = model.ContentHash;
        Assert.Equal(0, Live() - before);
        model.SaveCheckpoint(dir);
        Assert.Equal(0, Live() - before);
    }

    /// <summary>
    /// A LLaMA-family teacher left two tensors per load to the finalizer after Dispose: the rotary inverse frequencies'
    /// CPU tensor, and the inv_freq buffer itself (non-persistent, so not among the buffers the module disposes).
    /// </summary>
    [SharedDataFact]
    public void LoadingAndDisposingATeacherLeavesNoTensorAlive()
    {
        long Live() => DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        foreach (var path in new[] { Models("llama2c-stories260K", "stories260K.bin"), Models("llama2c-stories260K-hf"), Models("hf-tiny-random-gpt2") })
        {
            using (var warm = TeacherModel.Load(path)) warm.Generate(new GenerationRequest { PromptIds = [[1, 2]], MaxNewTokens = 3 });
            long before = Live();
            using (var teacher = TeacherModel.Load(path)) teacher.Generate(new GenerationRequest { PromptIds = [[1, 2]], MaxNewTokens = 3 });
            Assert.True(Live() == before, $"{path}: {Live() - before} tensors left alive");
        }
    }

    [SharedDataFact]
    public void ShardedSafetensorsIndexLoadsLikeASingleFile()
    {
        using var single = TeacherModel.Load(Models("llama2c-stories260K-hf"));
        var dir = Path.Combine(Temp, "sharded");
        Directory.CreateDirectory(dir);
        File.Copy(Models("llama2c-stories260K-hf", "config.json"), Path.Combine(dir, "config.json"));
        var named = single.NamedParameters().ToList();
        var map = new JsonObject();
        for (int shard = 0; shard < 2; shard++)
        {
            var file = $"model-0000{shard + 1}-of-00002.safetensors";
            var part = named.Where((_, i) => i % 2 == shard).ToList();
            Safetensors.Write(Path.Combine(dir, file), part.Select(p => (p.Name, (Tensor)p.Parameter)));
            foreach (var p in part) map[p.Name] = file;
        }
        File.WriteAllText(Path.Combine(dir, "model.safetensors.index.json"), new JsonObject { ["weight_map"] = map }.ToJsonString());
        using var sharded = TeacherModel.Load(dir);
        Assert.Equal(single.ContentHash, sharded.ContentHash);

        File.Delete(Path.Combine(dir, "model-00002-of-00002.safetensors"));
        var e = Assert.Throws<FileNotFoundException>(() => TeacherModel.Load(dir));
        Assert.Contains("model-00002-of-00002.safetensors", e.Message);
    }

    [SharedDataFact]
    public void MissingAndTruncatedFilesAreNamed()
    {
        var missing = Path.Combine(Temp, "nope.bin");
        Assert.Contains("nope.bin", Assert.Throws<FileNotFoundException>(() => TeacherModel.Load(missing)).Message);

        var bin = Path.Combine(Temp, "stories260K.bin");
        var bytes = File.ReadAllBytes(Models("llama2c-stories260K", "stories260K.bin"));
        File.WriteAllBytes(bin, bytes.AsSpan(0, bytes.Length - 1000).ToArray());
        var e = Assert.Throws<InvalidDataException>(() => TeacherModel.Load(bin));
        Assert.Contains("truncated", e.Message);
        Assert.Contains("1056540", e.Message);

        var hf = CopyDir(Models("llama2c-stories260K-hf"), "truncated-hf");
        var st = Path.Combine(hf, "model.safetensors");
        var full = File.ReadAllBytes(st);
        File.WriteAllBytes(st, full.AsSpan(0, full.Length / 2).ToArray());
        var t = Assert.Throws<InvalidDataException>(() => TeacherModel.Load(hf));
        Assert.Contains("model.safetensors", t.Message);
        Assert.Contains("truncated", t.Message);

        var noConfig = CopyDir(Models("llama2c-stories260K-hf"), "no-config");
        File.Delete(Path.Combine(noConfig, "config.json"));
        Assert.Contains("config.json", Assert.Throws<FileNotFoundException>(() => TeacherModel.Load(noConfig)).Message);

        var pickle = CopyDir(Models("llama2c-stories260K-hf"), "pickle-only");
        File.Move(Path.Combine(pickle, "model.safetensors"), Path.Combine(pickle, "pytorch_model.bin"));
        Assert.Contains("pytorch_model.bin", Assert.Throws<NotSupportedException>(() => TeacherModel.Load(pickle)).Message);
    }

    [SharedDataFact]
    public void NonFiniteWeightsAndImplausibleHeadersAreRefused()
    {
        // One NaN in the embeddings of a real checkpoint: before, every logit became NaN and generation repeated token 0.
        var dir = CopyDir(Models("llama2c-stories260K-hf"), "nan-weights");
        var weights = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(weights);
        long headerLength = BitConverter.ToInt64(bytes, 0);
        var header = JsonNode.Parse(bytes.AsSpan(8, (int)headerLength))!.AsObject();
        const string name = "model.embed_tokens.weight";
        var entry = header[name]!;
        long at = 8 + headerLength + entry["data_offsets"]![0]!.GetValue<long>();
        BitConverter.GetBytes(float.NaN).CopyTo(bytes, at);
        File.WriteAllBytes(weights, bytes);
        var nan = Assert.Throws<InvalidDataException>(() => TeacherModel.Load(dir));
        Assert.Equal($"{dir}: tensor '{name}' holds 1 NaN or infinite values of {entry["shape"]!.AsArray().Aggregate(1L, (a, d) => a * d!.GetValue<long>())}; the checkpoint is damaged.", nan.Message);

        // A llama2.c header whose vocabulary size overflows: named, not an OverflowException.
        var bin = Path.Combine(Temp, "min-vocab.bin");
        var legacy = File.ReadAllBytes(Models("llama2c-stories260K", "stories260K.bin"));
        BitConverter.GetBytes(int.MinValue).CopyTo(legacy, 20);
        File.WriteAllBytes(bin, legacy);
        Assert.Equal($"{bin}: header field 'vocab_size' = {int.MinValue} is implausible; not a llama2.c checkpoint.",
            Assert.Throws<InvalidDataException>(() => TeacherModel.Load(bin)).Message);
    }

    [Fact]
    public void AConfigThatWouldRunAnotherModelIsRefusedNamingTheField()
    {
        var path = Path.Combine(Temp, "config.json");
        string Refused(string fields)
        {
            File.WriteAllText(path, "{\"model_type\":\"llama\",\"vocab_size\":512,\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2," +
                                    "\"num_attention_heads\":4,\"max_position_embeddings\":256," + fields + "}");
            return Assert.Throws<InvalidDataException>(() => TeacherConfig.FromHuggingFaceJson(path)).Message;
        }
        // A rope scaling without its type was ignored (the unscaled model ran); one without its parameters got made-up ones.
        Assert.Equal($"{path}: rope_scaling {{\"factor\":8}} has no 'rope_type' (or 'type').", Refused("\"rope_scaling\":{\"factor\":8}"));
        Assert.Equal($"{path}: rope_scaling of type 'linear' needs a number 'factor', found none.", Refused("\"rope_scaling\":{\"type\":\"linear\"}"));
        Assert.Equal($"{path}: rope_scaling of type 'llama3' needs a number 'low_freq_factor', found none.",
            Refused("\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,\"high_freq_factor\":4,\"original_max_position_embeddings\":8192}"));
        // Values of another JSON type: named (they were a bare InvalidOperationException, or head_dim 8.0 silently replaced).
        Assert.Equal($"{path}: field 'rms_norm_eps' must be a number, found \"1e-5\".", Refused("\"rms_norm_eps\":\"1e-5\""));
        Assert.Equal($"{path}: field 'head_dim' must be an integer, found 8.5.", Refused("\"head_dim\":8.5"));
        // Qwen2 windows only the layers from max_window_layers on: none, all, or a mix this teacher does not run.
        string Qwen(string fields)
        {
            File.WriteAllText(path, "{\"model_type\":\"qwen2\",\"vocab_size\":512,\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":4," +
                                    "\"num_attention_heads\":4,\"max_position_embeddings\":256,\"use_sliding_window\":true,\"sliding_window\":32" + fields + "}");
            return path;
        }
        Assert.Null(TeacherConfig.FromHuggingFaceJson(Qwen("")).SlidingWindow);                           // default 28 >= 4 layers: none
        Assert.Equal(32, TeacherConfig.FromHuggingFaceJson(Qwen(",\"max_window_layers\":0")).SlidingWindow); // every layer
        Assert.Equal($"{path}: max_window_layers 2 windows layers 2-3 of 4 and not the others; mixing windowed and full-attention layers is not supported.",
            Assert.Throws<NotSupportedException>(() => TeacherConfig.FromHuggingFaceJson(Qwen(",\"max_window_layers\":2"))).Message);
        var windowed = TeacherConfig.FromHuggingFaceJson(Qwen(",\"max_window_layers\":0"));
        File.WriteAllText(path, windowed.ToHuggingFaceJson().ToJsonString());
        Assert.Equal(32, TeacherConfig.FromHuggingFaceJson(path).SlidingWindow);                            // and it round-trips

        // A stop token the vocabulary does not have (a tokenizer or config of another model).
        Assert.Equal($"{path}: eos_token_id 600 is outside the vocabulary [0, 512).", Refused("\"eos_token_id\":600"));
    }

    /// <summary>
    /// A zero or negative rope_theta, rope scaling factor or norm epsilon loaded without a word, and every logit of the
    /// teacher was NaN (stories260K with rope_theta 0: generation 407,0,0,0,0, every score NaN).
    /// </summary>
    [Fact]
    public void AConfigWhoseRopeThetaScalingOrEpsilonWouldGiveNaNLogitsIsRefusedNamingTheField()
    {
        var path = Path.Combine(Temp, "config.json");
        string Refused(string fields)
        {
            File.WriteAllText(path, "{\"model_type\":\"llama\",\"vocab_size\":512,\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2," +
                                    "\"num_attention_heads\":4,\"max_position_embeddings\":256," + fields + "}");
            return Assert.Throws<InvalidDataException>(() => TeacherConfig.FromHuggingFaceJson(path)).Message;
        }
        Assert.Equal($"{path}: field 'rope_theta' must be > 0 and finite, found 0.", Refused("\"rope_theta\":0"));
        Assert.Equal($"{path}: field 'rope_theta' must be > 0 and finite, found -10000.", Refused("\"rope_theta\":-10000"));
        Assert.Equal($"{path}: field 'rms_norm_eps' must be >= 0 and finite, found -1E-05.", Refused("\"rms_norm_eps\":-1e-5"));
        Assert.Equal($"{path}: field 'rope_scaling.factor' must be > 0 and finite, found 0.", Refused("\"rope_scaling\":{\"type\":\"linear\",\"factor\":0}"));
        Assert.Equal($"{path}: field 'rope_scaling.low_freq_factor' must be > 0 and finite, found 0.",
            Refused("\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":0,\"high_freq_factor\":4,\"original_max_position_embeddings\":8192}"));
        File.WriteAllText(path, "{\"model_type\":\"gpt2\",\"vocab_size\":512,\"n_embd\":64,\"n_head\":4,\"n_layer\":2,\"n_positions\":256,\"layer_norm_epsilon\":-1}");
        Assert.Equal($"{path}: field 'layer_norm_epsilon' must be >= 0 and finite, found -1.",
            Assert.Throws<InvalidDataException>(() => TeacherConfig.FromHuggingFaceJson(path)).Message);
        // The values real checkpoints use still load.
        File.WriteAllText(path, "{\"model_type\":\"llama\",\"vocab_size\":512,\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2," +
                                "\"num_attention_heads\":4,\"max_position_embeddings\":256,\"rope_theta\":500000.0,\"rms_norm_eps\":1e-5}");
        Assert.Equal(500000, TeacherConfig.FromHuggingFaceJson(path).RopeTheta);
    }

    /// <summary>
    /// model_type and GPT-2's activation_function were read with an unchecked GetValue&lt;string&gt;: a number or an array
    /// gave a bare InvalidOperationException naming neither the file nor the field.
    /// </summary>
    [Fact]
    public void StringFieldsOfAnotherJsonTypeAreRefusedNamingTheField()
    {
        var path = Path.Combine(Temp, "config.json");
        string Refused(string json)
        {
            File.WriteAllText(path, json);
            return Assert.Throws<InvalidDataException>(() => TeacherConfig.FromHuggingFaceJson(path)).Message;
        }
        const string llama = "\"vocab_size\":512,\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"max_position_embeddings\":256";
        Assert.Equal($"{path}: field 'model_type' must be a string, found 7.", Refused("{\"model_type\":7," + llama + "}"));
        Assert.Equal($"{path}: field 'model_type' must be a string, found [\"llama\"].", Refused("{\"model_type\":[\"llama\"]," + llama + "}"));
        Assert.Equal($"{path}: field 'model_type' is missing.", Refused("{" + llama + "}"));
        const string gpt2 = "{\"model_type\":\"gpt2\",\"vocab_size\":512,\"n_embd\":64,\"n_head\":4,\"n_layer\":2,\"n_positions\":256";
        Assert.Equal($"{path}: field 'activation_function' must be a string, found {{\"name\":\"gelu\"}}.", Refused(gpt2 + ",\"activation_function\":{\"name\":\"gelu\"}}"));
        Assert.Equal($"{path}: field 'hidden_act' must be a string, found 1.", Refused("{\"model_type\":\"llama\"," + llama + ",\"hidden_act\":1}"));
        File.WriteAllText(path, gpt2 + "}");
        Assert.Equal("gelu_new", TeacherConfig.FromHuggingFaceJson(path).Activation); // absent: the default
        // A position count that is not an integer was truncated (8192.5 ran as 8192).
        Assert.Equal($"{path}: rope_scaling of type 'llama3' needs a positive integer 'original_max_position_embeddings', found 8192.5.",
            Refused("{\"model_type\":\"llama\"," + llama + ",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":1,\"high_freq_factor\":4,\"original_max_position_embeddings\":8192.5}}"));
    }

    /// <summary>
    /// generation_config.json's eos_token_id was read with unchecked GetValue&lt;int&gt;: a string gave a bare
    /// InvalidOperationException, and an id outside the vocabulary was taken as the stop token (config.json's own is
    /// refused). Both are now named with the file.
    /// </summary>
    [SharedDataFact]
    public void GenerationConfigStopTokensAreCheckedAsConfigJsonsAre()
    {
        var dir = CopyDir(Models("llama2c-stories260K-hf"), "gen-config");
        var path = Path.Combine(dir, "generation_config.json");
        string Refused(string json)
        {
            File.WriteAllText(path, json);
            return Assert.Throws<InvalidDataException>(() => TeacherModel.Load(dir)).Message;
        }
        Assert.Equal($"{path}: field 'eos_token_id' must be a token id or a list of them, found \"2\".", Refused("{\"eos_token_id\":\"2\"}"));
        Assert.Equal($"{path}: field 'eos_token_id' must be a token id or a list of them, found [2,\"x\"].", Refused("{\"eos_token_id\":[2,\"x\"]}"));
        Assert.Equal($"{path}: eos_token_id 600 is outside the vocabulary [0, 512).", Refused("{\"eos_token_id\":[2,600]}"));
        File.WriteAllText(path, "{\"eos_token_id\":[2,1]}");
        using (var teacher = TeacherModel.Load(dir)) Assert.Equal([2, 1], teacher.Config.EosTokenIds);
        File.WriteAllText(path, "{\"eos_token_id\":null}"); // as config.json: null is no override
        using (var teacher = TeacherModel.Load(dir)) Assert.NotEmpty(teacher.Config.EosTokenIds);
    }

    [SharedDataFact]
    public void ShapeMismatchMissingTensorAndUnknownModelTypeAreNamed()
    {
        var dir = CopyDir(Models("llama2c-stories260K-hf"), "bad-shape");
        var configPath = Path.Combine(dir, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        config["intermediate_size"] = 100;
        File.WriteAllText(configPath, config.ToJsonString());
        var e = Assert.Throws<InvalidDataException>(() => TeacherModel.Load(dir));
        Assert.Contains("model.layers.0.mlp.", e.Message);
        Assert.Contains("[172,64]", e.Message);
        Assert.Contains("[100,64]", e.Message);

        config["intermediate_size"] = 172;
        config["model_type"] = "bert";
        File.WriteAllText(configPath, config.ToJsonString());
        var u = Assert.Throws<NotSupportedException>(() => TeacherModel.Load(dir));
        Assert.Contains("model_type 'bert'", u.Message);

        config["model_type"] = "llama";
        config["hidden_act"] = "relu";
        File.WriteAllText(configPath, config.ToJsonString());
        Assert.Contains("hidden_act 'relu'", Assert.Throws<NotSupportedException>(() => TeacherModel.Load(dir)).Message);

        config["hidden_act"] = "silu";
        config["num_hidden_layers"] = 4; // weights hold 5 layers
        File.WriteAllText(configPath, config.ToJsonString());
        Assert.Contains("model.layers.4.", Assert.Throws<InvalidDataException>(() => TeacherModel.Load(dir)).Message);

        config["num_hidden_layers"] = 5;
        File.WriteAllText(configPath, config.ToJsonString());
        using (var good = TeacherModel.Load(dir))
            Safetensors.Write(Path.Combine(dir, "model.safetensors"),
                good.NamedParameters().Where(p => p.Name != "model.norm.weight").Select(p => (p.Name, (Tensor)p.Parameter)));
        var m = Assert.Throws<InvalidDataException>(() => TeacherModel.Load(dir));
        Assert.Contains("'model.norm.weight' is missing", m.Message);
    }

    /// <summary>
    /// A config that ties the head to the embeddings over weights that hold a head of their own (an untied model, its
    /// config edited or defaulted): the head was skipped without a word and another model ran.
    /// </summary>
    [SharedDataFact]
    public void ATiedConfigOverWeightsWithAnotherHeadIsRefused()
    {
        var dir = CopyDir(Models("llama2c-stories260K-hf"), "tied-other-head");
        List<(string Name, Tensor Tensor)> named;
        using (var m = TeacherModel.Load(dir)) named = m.NamedParameters().Select(p => (p.Name, p.Parameter.detach().clone())).ToList();
        var embedding = named.Single(p => p.Name == "model.embed_tokens.weight").Tensor;
        using var otherHead = embedding.neg();
        Safetensors.Write(Path.Combine(dir, "model.safetensors"), [.. named, ("lm_head.weight", otherHead)]);
        Assert.Equal($"{dir}: tensor 'lm_head.weight' differs from 'model.embed_tokens.weight', but the config ties them (tie_word_embeddings true); " +
                     "the config and weights disagree (an untied model's config says tie_word_embeddings false).",
            Assert.Throws<InvalidDataException>(() => TeacherModel.Load(dir)).Message);

        // A tied save that also wrote the head (the same values) still loads.
        Safetensors.Write(Path.Combine(dir, "model.safetensors"), [.. named, ("lm_head.weight", embedding)]);
        using (var tied = TeacherModel.Load(dir)) Assert.Equal(named.Sum(p => p.Tensor.numel()), tied.ParameterCount);
        foreach (var (_, t) in named) t.Dispose();
    }

    [SharedDataFact]
    public void TokenizerThatDoesNotFitTheVocabularyAndOverlongPromptsAreRejected()
    {
        var e = Assert.Throws<InvalidDataException>(() => TeacherModel.Load(Models("llama2c-stories260K", "stories260K.bin"),
            new TeacherLoadOptions { TokenizerPath = Models("llama2-spm-tokenizer-golden", "tokenizer.bin") }));
        Assert.Contains("32000", e.Message);
        Assert.Contains("512", e.Message);

        using var model = TeacherModel.Load(Models("llama2c-stories260K", "stories260K.bin"));
        var tooLong = Enumerable.Repeat(403, 600).ToArray();
        var p = Assert.Throws<ArgumentException>(() => model.Generate(new GenerationRequest { PromptIds = [[1], tooLong] }));
        Assert.Contains("Prompt 1", p.Message);
        Assert.Contains("512", p.Message);
        Assert.Throws<ArgumentException>(() => model.ScoreContinuations([string.Join(" ", Enumerable.Repeat("dog", 600))], [" park"]));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Generate(new GenerationRequest { PromptIds = [[1, 9999]] }));
        Assert.Throws<ArgumentException>(() => model.Generate(new GenerationRequest()));

        // A prompt near the end of the context gets the remaining positions only.
        var nearEnd = model.Generate(new GenerationRequest { PromptIds = [[1, .. Enumerable.Repeat(403, 505)]], MaxNewTokens = 50, StopTokenIds = [] });
        Assert.Equal(6, nearEnd.Sequences[0].TokenIds.Length);
        Assert.Equal("length", nearEnd.Sequences[0].FinishReason);
    }

    [Fact]
    public void ConfigReadsLlamaVariantsAndNamesUnsupportedFields()
    {
        var path = Path.Combine(Temp, "config.json");
        File.WriteAllText(path, """
            {"model_type":"qwen2","vocab_size":1000,"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
             "num_attention_heads":4,"num_key_value_heads":2,"max_position_embeddings":256,"rms_norm_eps":1e-6,
             "rope_theta":1000000.0,"hidden_act":"silu","tie_word_embeddings":true,"use_sliding_window":false,"sliding_window":64}
            """);
        var qwen = TeacherConfig.FromHuggingFaceJson(path);
        Assert.True(qwen.QkvBias);
        Assert.False(qwen.OutputProjectionBias);
        Assert.Null(qwen.SlidingWindow);
        Assert.Equal(16, qwen.HeadDim);
        Assert.Equal(1e6, qwen.RopeTheta);

        File.WriteAllText(path, """
            {"model_type":"llama","vocab_size":1000,"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
             "num_attention_heads":4,"max_position_embeddings":256,"rope_scaling":{"rope_type":"yarn","factor":4.0}}
            """);
        Assert.Contains("rope_scaling.type 'yarn'", Assert.Throws<NotSupportedException>(() => TeacherConfig.FromHuggingFaceJson(path)).Message);

        File.WriteAllText(path, """{"model_type":"llama","vocab_size":1000}""");
        Assert.Contains("'hidden_size' is missing", Assert.Throws<InvalidDataException>(() => TeacherConfig.FromHuggingFaceJson(path)).Message);

        // Round trip through ToHuggingFaceJson keeps every field we use.
        var mistral = new TeacherConfig { ModelType = "mistral", VocabSize = 300, HiddenSize = 32, IntermediateSize = 64, NumLayers = 2, NumHeads = 4,
            NumKeyValueHeads = 2, HeadDim = 8, MaxPositions = 128, SlidingWindow = 16, RopeScalingType = "llama3", RopeScalingFactor = 8, TieWordEmbeddings = false,
            EosTokenIds = [2, 3] };
        File.WriteAllText(path, mistral.ToHuggingFaceJson().ToJsonString());
        var back = TeacherConfig.FromHuggingFaceJson(path);
        Assert.Equal(mistral with { EosTokenIds = [] }, back with { EosTokenIds = [] });
        Assert.Equal(new[] { 2, 3 }, back.EosTokenIds);
    }

    [Fact]
    public void QwenAndMistralVariantsRunWithKvCacheParity()
    {
        // Random Qwen2 (q/k/v bias, GQA, theta 1e6) and Mistral (sliding window shorter than the sequence, llama3 rope scaling).
        var qwen = new TeacherConfig { ModelType = "qwen2", VocabSize = 97, HiddenSize = 32, IntermediateSize = 48, NumLayers = 2, NumHeads = 4,
            NumKeyValueHeads = 2, HeadDim = 8, MaxPositions = 64, RopeTheta = 1e6, QkvBias = true, TieWordEmbeddings = true };
        var mistral = qwen with { ModelType = "mistral", QkvBias = false, SlidingWindow = 6, TieWordEmbeddings = false, RopeScalingType = "llama3", RopeScalingFactor = 8, RopeOriginalMaxPositions = 16 };
        foreach (var config in new[] { qwen, mistral })
        {
            using var model = TeacherModel.Create(config, tokenizer: null, seed: 3);
            if (config.QkvBias) Assert.Contains(model.NamedParameters(), p => p.Name == "model.layers.0.self_attn.q_proj.bias");
            Assert.Equal(config.TieWordEmbeddings, !model.NamedParameters().Any(p => p.Name == "lm_head.weight"));
            var request = new GenerationRequest { PromptIds = [[5, 6, 7, 8, 9, 10, 11, 12], [3, 4]], MaxNewTokens = 12, StopTokenIds = [] };
            var cached = model.Generate(request);
            var full = model.Generate(new GenerationRequest { PromptIds = request.PromptIds, MaxNewTokens = 12, StopTokenIds = [], UseKvCache = false });
            Assert.Equal(full.Sequences[0].TokenIds, cached.Sequences[0].TokenIds);
            Assert.Equal(full.Sequences[1].TokenIds, cached.Sequences[1].TokenIds);

            var dir = Path.Combine(Temp, config.ModelType);
            model.SaveCheckpoint(dir);
            using var back = TeacherModel.Load(dir);
            Assert.Equal(model.ContentHash, back.ContentHash);
            Assert.Equal(cached.Sequences[0].TokenIds, back.Generate(request).Sequences[0].TokenIds);
        }
    }
}
