using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Tokenizers;
using RetriKT.MLNet.Common;

namespace RetriKT.MLNet.Teacher;

/// <summary>
/// The teacher's tokenizer: text ↔ ids plus the special ids generation needs. Backed by Microsoft.ML.Tokenizers for
/// byte-level BPE (<c>vocab.json</c> + <c>merges.txt</c> with GPT-2's split, or a byte-level BPE <c>tokenizer.json</c> with
/// its own added tokens, normalizer and pre-tokenizer, see <see cref="HfPreTokenizer"/>) and
/// SentencePiece (<c>tokenizer.model</c>), and by our own reader for llama2.c <c>tokenizer.bin</c> files
/// (the library has none).
/// </summary>
public sealed class TeacherTokenizer
{
    private readonly Func<string, List<int>> _encode;
    private readonly Func<string, List<int>> _encodeContinuation;
    private readonly Func<int, bool>? _startsWithSpace;
    private readonly Func<IEnumerable<int>, string> _decode;
    // Each file the tokenizer was read from, the name a saved checkpoint gives it (the one Load looks for in a folder),
    // and its bytes as read.
    private readonly IReadOnlyList<SourceFile> _files;

    /// <summary>
    /// A file the tokenizer was read from, with its bytes as read: a save writes these, not the file as it is by then.
    /// Copied from the path at save time, a tokenizer folder retrained after the model was made (another vocabulary)
    /// went into the checkpoint, which loaded and encoded text with ids the model was never trained on; a folder deleted
    /// meanwhile failed the save half-way.
    /// </summary>
    private sealed record SourceFile(string Path, string SavedName, byte[] Content)
    {
        public static SourceFile Read(string path, string savedName) => new(path, savedName, File.ReadAllBytes(path));
    }

    private TeacherTokenizer(string kind, int vocabSize, Func<string, List<int>> encode, Func<IEnumerable<int>, string> decode,
        int? bos, int? eos, int? pad, IReadOnlyList<SourceFile> files, Func<string, List<int>>? encodeContinuation = null,
        Func<int, bool>? startsWithSpace = null)
    {
        _startsWithSpace = startsWithSpace;
        Kind = kind; VocabSize = vocabSize; _encode = encode; _encodeContinuation = encodeContinuation ?? encode; _decode = decode;
        BosId = bos; EosId = eos; PadId = pad; _files = files; SourceFiles = [.. files.Select(f => f.Path)];
    }

    /// <summary>Which format backs this tokenizer: "gpt2-bpe", "sentencepiece" or "llama2c".</summary>
    public string Kind { get; }
    /// <summary>Number of ids the tokenizer can produce (must not exceed the model's vocabulary).</summary>
    public int VocabSize { get; }
    /// <summary>Beginning-of-sequence id, or null when the tokenizer has none.</summary>
    public int? BosId { get; }
    /// <summary>End-of-sequence id, or null when the tokenizer has none.</summary>
    public int? EosId { get; }
    /// <summary>Padding id (falls back to EOS, then 0, when the files define none; padded slots are masked anyway).</summary>
    public int? PadId { get; }

    /// <summary>The files this tokenizer was read from (copied next to a saved checkpoint).</summary>
    public IReadOnlyList<string> SourceFiles { get; }

    /// <summary>
    /// SHA-256 (hex) over the files a save writes (each its saved name and bytes, by name): the identity a checkpoint
    /// records for the tokenizer its ids belong to. The same files read from another folder give the same hash.
    /// </summary>
    internal string ContentHash => _contentHash ??= ComputeContentHash();
    private string? _contentHash;

    private string ComputeContentHash()
    {
        using var sha = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        foreach (var file in _files.OrderBy(f => f.SavedName, StringComparer.Ordinal))
        {
            sha.AppendData(Encoding.UTF8.GetBytes($"{file.SavedName}|{file.Content.Length}\n"));
            sha.AppendData(file.Content);
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    /// <summary>Encodes <paramref name="text"/>; prepends <see cref="BosId"/> when <paramref name="addBos"/> and the tokenizer has one.</summary>
    public int[] Encode(string text, bool addBos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = _encode(text);
        if (addBos && BosId is int bos) ids.Insert(0, bos);
        return ids.ToArray();
    }

    /// <summary>
    /// Encodes <paramref name="text"/> as it reads after other text (a verbalizer word after its prompt, a continuation
    /// after its prefix): the ids it adds to the encoding of the whole text. Byte-level BPE: the same as
    /// <see cref="Encode"/>. SentencePiece (<c>tokenizer.model</c> BPE, llama2.c): without the dummy-prefix space that
    /// <see cref="Encode"/> puts at the start of a text, so " great" is "▁great" and not "▁" + "▁great" (a lone space
    /// token, then the word after a double space). A SentencePiece unigram model is encoded by the library, which always
    /// adds the dummy prefix: there this equals <see cref="Encode"/>.
    /// </summary>
    public int[] EncodeContinuation(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return _encodeContinuation(text).ToArray();
    }

    /// <summary>
    /// <paramref name="text"/> as it reads where it stands: after other text (<paramref name="afterText"/>,
    /// <see cref="EncodeContinuation(string)"/>) or at the start of a text (<see cref="Encode"/> without BOS). Every place
    /// that encodes a continuation, a verbalizer word or a target apart from the text before it chooses here.
    /// </summary>
    public int[] EncodeContinuation(string text, bool afterText) => afterText ? EncodeContinuation(text) : Encode(text, addBos: false);

    /// <summary>
    /// Decodes ids as text that continues other text (generated output after its prompt): as <see cref="Decode"/>, but a
    /// SentencePiece first piece keeps its leading space, which <see cref="Decode"/> drops as the dummy prefix of a text's
    /// start ("▁there" reads " there" after "Once upon a time,"). Byte-level BPE keeps it anyway; unigram SentencePiece
    /// models (library) are decoded as by <see cref="Decode"/>. <paramref name="decoded"/>: <see cref="Decode"/>'s text of
    /// the same ids, when the caller has it (generation's stop check decodes every row at every step).
    /// </summary>
    internal string DecodeContinuation(IReadOnlyList<int> ids, string? decoded = null)
    {
        var text = decoded ?? Decode(ids);
        int first = ids.FirstOrDefault(IsText, -1);
        return _startsWithSpace is not null && first >= 0 && _startsWithSpace(first) && !text.StartsWith(' ') ? " " + text : text;
    }

    /// <summary>Decodes ids to text, leaving out BOS/EOS/PAD and ids outside the vocabulary.</summary>
    public string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        return _decode(ids.Where(IsText));
    }

    // An id past the tokenizer's vocabulary (a model's table padded to a multiple of 64, say, which sampling can pick) has
    // no text, as in Hugging Face's tokenizers: each format treated it its own way (llama2.c threw, SentencePiece's text
    // around it changed).
    private bool IsText(int id) => id >= 0 && id < VocabSize && id != BosId && id != EosId && id != PadId;

    /// <summary>GPT-2 byte-level BPE from <c>vocab.json</c> + <c>merges.txt</c>: GPT-2's regex split, no prefix space, <c>&lt;|endoftext|&gt;</c> matched whole.</summary>
    public static TeacherTokenizer FromGpt2Files(string vocabJsonPath, string mergesPath)
    {
        RequireFile(vocabJsonPath); RequireFile(mergesPath);
        var vocabMap = ReadVocab(File.ReadAllBytes(vocabJsonPath), vocabJsonPath);
        var merges = File.ReadLines(mergesPath).Where(l => l.Length > 0 && !l.StartsWith("#version", StringComparison.Ordinal)).ToList();
        var added = vocabMap.TryGetValue(EndOfText, out var eot)
            ? new JsonArray(new JsonObject { ["id"] = eot, ["content"] = EndOfText, ["special"] = true }) : null;
        return Wrap(vocabMap, merges, [SourceFile.Read(vocabJsonPath, "vocab.json"), SourceFile.Read(mergesPath, "merges.txt")], HfPreTokenizer.Gpt2, null, new HfAddedTokens(added, null, vocabJsonPath), ignoreMerges: false);
    }

    /// <summary>
    /// A HF <c>tokenizer.json</c> whose model is byte-level BPE (GPT-2, RoBERTa, Qwen2, LLaMA-3 style), read as HF runs it:
    /// its <c>added_tokens</c> matched whole first, then its <c>normalizer</c> and <c>pre_tokenizer</c>
    /// (see <see cref="HfPreTokenizer"/>), then BPE honouring <c>ignore_merges</c>. A part it cannot run exactly is refused
    /// (<see cref="NotSupportedException"/> naming the file and the type). SentencePiece-style JSON is refused; use <c>tokenizer.model</c>.
    /// </summary>
    public static TeacherTokenizer FromTokenizerJson(string path)
    {
        RequireFile(path);
        var root = JsonFiles.ReadObject(path);
        var model = root["model"] as JsonObject ?? throw new InvalidDataException($"{path}: field 'model' is missing.");
        var type = model["type"]?.GetValue<string>();
        if (type != "BPE") throw new NotSupportedException($"{path}: model.type '{type}' is not supported; only byte-level 'BPE' tokenizer.json files are read (use tokenizer.model for SentencePiece).");
        if (model["byte_fallback"]?.GetValue<bool>() == true || !root.ToJsonString().Contains("\"ByteLevel\"", StringComparison.Ordinal))
            throw new NotSupportedException($"{path}: this tokenizer.json is SentencePiece-style BPE (byte_fallback / no ByteLevel pre-tokenizer); load the tokenizer.model next to it instead.");
        foreach (var field in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
            if (model[field]?.GetValue<string>() is { Length: > 0 } affix)
                throw new NotSupportedException($"{path}: model.{field} '{affix}' is not supported for byte-level BPE.");
        if (model["dropout"] is JsonValue dropout && dropout.GetValue<double>() > 0)
            throw new NotSupportedException($"{path}: model.dropout {dropout} is not supported (BPE dropout makes encoding random).");
        var normalize = HfPreTokenizer.Normalizer(root["normalizer"], path);
        var preTokenizer = HfPreTokenizer.FromJson(root["pre_tokenizer"], path);
        var addedJson = root["added_tokens"] as JsonArray;
        var added = new HfAddedTokens(addedJson, normalize, path);
        var vocabObj = model["vocab"] as JsonObject ?? throw new InvalidDataException($"{path}: field 'model.vocab' is missing.");
        var vocabMap = vocabObj.ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<int>(), StringComparer.Ordinal);
        var merges = new List<string>();
        foreach (var m in model["merges"]?.AsArray() ?? throw new InvalidDataException($"{path}: field 'model.merges' is missing."))
            merges.Add(m is JsonArray pair ? pair[0]!.GetValue<string>() + " " + pair[1]!.GetValue<string>() : m!.GetValue<string>());
        foreach (var token in addedJson ?? [])
            if (token?["content"]?.GetValue<string>() is { } content && token["id"]?.GetValue<int>() is int id) vocabMap.TryAdd(content, id);
        var tokenizer = Wrap(vocabMap, merges, [SourceFile.Read(path, "tokenizer.json")], preTokenizer, normalize, added, model["ignore_merges"]?.GetValue<bool>() ?? false);
        return WithTokenizerConfig(tokenizer, path, vocabMap);
    }

    /// <summary>
    /// Hugging Face keeps a <c>tokenizer.json</c>'s special tokens in the <c>tokenizer_config.json</c> beside it
    /// (<c>bos_token</c>, <c>eos_token</c>, <c>pad_token</c>: a token, an object with its <c>content</c>, or null for
    /// none). Without them a LLaMA-3 tokenizer had no BOS (<c>&lt;|begin_of_text|&gt;</c>), so its prompts went to the model
    /// without one, and a Qwen2 tokenizer took <c>&lt;|endoftext|&gt;</c> as BOS, which Qwen does not add. A field that is
    /// absent keeps the <c>&lt;|endoftext|&gt;</c> convention; a token outside the vocabulary is refused. The file is kept
    /// with the tokenizer's files, so a saved checkpoint reads back the same ids.
    /// </summary>
    private static TeacherTokenizer WithTokenizerConfig(TeacherTokenizer tokenizer, string tokenizerJsonPath, Dictionary<string, int> vocab)
    {
        var configPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(tokenizerJsonPath))!, TokenizerConfigFile);
        if (!File.Exists(configPath)) return tokenizer;
        var config = JsonFiles.ReadObject(configPath);
        int? Id(string field, int? absent)
        {
            if (!config.TryGetPropertyValue(field, out var node)) return absent;
            string? content = node switch
            {
                null => null,
                JsonValue v when v.TryGetValue<string>(out var text) => text,
                JsonObject o when o["content"] is JsonValue c && c.TryGetValue<string>(out var text) => text,
                _ => throw new InvalidDataException($"{configPath}: field '{field}': expected a token, an object with its 'content', or null, found {node.ToJsonString()}."),
            };
            if (content is null) return null;
            return vocab.TryGetValue(content, out var id) ? id
                : throw new InvalidDataException($"{configPath}: field '{field}': token '{content}' is not in the vocabulary of {tokenizerJsonPath}.");
        }
        int? bos = Id("bos_token", tokenizer.BosId), eos = Id("eos_token", tokenizer.EosId), pad = Id("pad_token", tokenizer.PadId) ?? eos;
        return new TeacherTokenizer(tokenizer.Kind, tokenizer.VocabSize, tokenizer._encode, tokenizer._decode, bos, eos, pad, [.. tokenizer._files, SourceFile.Read(configPath, TokenizerConfigFile)],
            tokenizer._encodeContinuation, tokenizer._startsWithSpace);
    }

    private const string TokenizerConfigFile = "tokenizer_config.json";

    private const string EndOfText = "<|endoftext|>";

    private static TeacherTokenizer Wrap(Dictionary<string, int> vocabMap, List<string> merges, IReadOnlyList<SourceFile> files,
        HfPreTokenizer preTokenizer, Func<string, string>? normalize, HfAddedTokens added, bool ignoreMerges)
    {
        int? eot = vocabMap.TryGetValue(EndOfText, out var e) ? e : null;
        // The library runs BPE on one pre-token at a time (WholeText) and decodes; the text pipeline is ours.
        var addedIds = added.Ids;
        var bpe = BpeTokenizer.Create(new BpeOptions(vocabMap)
        {
            Merges = merges, ByteLevel = true, PreTokenizer = WholeText.Instance, SpecialTokens = addedIds.Count > 0 ? addedIds : null,
        });
        var alphabet = ByteLevelBpeTrainer.ByteAlphabet();
        List<int> Encode(string text)
        {
            var ids = new List<int>();
            foreach (var (section, addedId) in added.Split(text, normalizedPass: false))
            {
                if (addedId is int a) { ids.Add(a); continue; }
                foreach (var (sub, normalizedId) in added.Split(normalize?.Invoke(section) ?? section, normalizedPass: true))
                {
                    if (normalizedId is int b) { ids.Add(b); continue; }
                    foreach (var piece in preTokenizer.Split(sub))
                    {
                        // ignore_merges: a pre-token that is itself in the vocabulary is emitted whole (LLaMA-3).
                        if (ignoreMerges && vocabMap.TryGetValue(string.Concat(Encoding.UTF8.GetBytes(piece).Select(x => alphabet[x])), out var whole)) ids.Add(whole);
                        else ids.AddRange(bpe.EncodeToIds(piece));
                    }
                }
            }
            return ids;
        }
        int size = vocabMap.Count == 0 ? 0 : vocabMap.Values.Max() + 1;
        return new TeacherTokenizer("gpt2-bpe", size, Encode, ids => bpe.Decode(ids) ?? "", eot, eot, eot, files);
    }

    /// <summary>No split: the text given to the library is already one pre-token.</summary>
    private sealed class WholeText : PreTokenizer
    {
        internal static readonly WholeText Instance = new();
        public override IEnumerable<(int Offset, int Length)> PreTokenize(string text) => text.Length == 0 ? [] : [(0, text.Length)];
        public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text) => text.Length == 0 ? [] : [(0, text.Length)];
    }

    private static Dictionary<string, int> ReadVocab(byte[] json, string path)
    {
        try { return JsonSerializer.Deserialize<Dictionary<string, int>>(json) ?? []; }
        catch (JsonException e) { throw new InvalidDataException($"{path}: vocabulary is not a JSON object of token → id ({e.Message}).", e); }
    }

    /// <summary>
    /// A SentencePiece <c>tokenizer.model</c> (LLaMA/Mistral style; BOS added by <see cref="Encode"/> on request).
    /// BPE models are encoded by our score-greedy merge (the reference algorithm, which llama2.c also uses), because
    /// Microsoft.ML.Tokenizers' SentencePiece BPE breaks merge ties differently from the reference on some inputs
    /// (for example "!!!!!!"); the library's decoder is used for text, and its encoder for unigram models.
    /// </summary>
    public static TeacherTokenizer FromSentencePiece(string modelPath)
    {
        RequireFile(modelPath);
        SentencePieceTokenizer sp;
        using (var s = File.OpenRead(modelPath))
        {
            try { sp = LlamaTokenizer.Create(s, addBeginOfSentence: false, addEndOfSentence: false); }
            catch (Exception e) when (e is not IOException)
            { throw new InvalidDataException($"{modelPath}: not a readable SentencePiece model ({e.Message}).", e); }
        }
        var bpe = Llama2cTokenizer.ReadSentencePieceBpe(modelPath);
        Func<string, List<int>> encode = bpe is not null ? t => bpe.Encode(t, addBos: false) : t => t.Length == 0 ? [] : sp.EncodeToIds(t).ToList();
        Func<string, List<int>>? continuation = bpe is not null ? t => bpe.Encode(t, addBos: false, dummyPrefix: false) : null;
        return new TeacherTokenizer("sentencepiece", sp.Vocabulary.Count, encode, ids => sp.Decode(ids) ?? "",
            sp.BeginningOfSentenceId, sp.EndOfSentenceId, null, [SourceFile.Read(modelPath, "tokenizer.model")], continuation, bpe is null ? null : bpe.StartsWithSpace);
    }

    /// <summary>A llama2.c tokenizer export (<c>tokenizer.bin</c>, <c>tok512.bin</c>); BOS = 1, EOS = 2.</summary>
    public static TeacherTokenizer FromLlama2cBin(string path)
    {
        var t = Llama2cTokenizer.Read(path);
        return new TeacherTokenizer("llama2c", t.VocabSize, s => t.Encode(s, addBos: false), t.Decode,
            Llama2cTokenizer.BosId, Llama2cTokenizer.EosId, null, [SourceFile.Read(path, "tokenizer.bin")], s => t.Encode(s, addBos: false, dummyPrefix: false), t.StartsWithSpace);
    }

    /// <summary>
    /// Finds a tokenizer at <paramref name="path"/>: a file (<c>*.model</c>, <c>*.json</c>, llama2.c <c>*.bin</c>) or a
    /// directory holding, in order of preference, <c>tokenizer.model</c>, <c>tokenizer.json</c>, <c>vocab.json</c> + <c>merges.txt</c>,
    /// <c>tokenizer.bin</c>. <c>tokenizer.json</c> comes before vocab.json + merges.txt because it is the complete
    /// description (a Qwen2 folder ships all three, and only the JSON has its split, NFC normalizer and added tokens);
    /// <c>tokenizer.model</c> comes first because a SentencePiece folder (LLaMA-2) also ships a SentencePiece-style
    /// tokenizer.json, which is not read.
    /// </summary>
    public static TeacherTokenizer Load(string path)
    {
        if (File.Exists(path))
        {
            return Path.GetExtension(path).ToLowerInvariant() switch
            {
                ".model" => FromSentencePiece(path),
                ".json" => FromTokenizerJson(path),
                ".bin" => FromLlama2cBin(path),
                var ext => throw new NotSupportedException($"{path}: tokenizer file type '{ext}' is not recognised (expected .model, .json or a llama2.c .bin)."),
            };
        }
        if (!Directory.Exists(path)) throw new FileNotFoundException($"Tokenizer path not found: {path}", path);
        string P(string f) => Path.Combine(path, f);
        if (File.Exists(P("tokenizer.model"))) return FromSentencePiece(P("tokenizer.model"));
        if (File.Exists(P("tokenizer.json"))) return FromTokenizerJson(P("tokenizer.json"));
        if (File.Exists(P("vocab.json")) && File.Exists(P("merges.txt"))) return FromGpt2Files(P("vocab.json"), P("merges.txt"));
        if (File.Exists(P("tokenizer.bin"))) return FromLlama2cBin(P("tokenizer.bin"));
        throw new FileNotFoundException($"{path}: no tokenizer found (looked for tokenizer.model, tokenizer.json, vocab.json + merges.txt, tokenizer.bin).", path);
    }

    /// <summary>The files <see cref="Load"/> looks for in a folder, in its order: the first one there is the tokenizer.</summary>
    internal static readonly string[] FolderEntryFiles = ["tokenizer.model", "tokenizer.json", "vocab.json", "tokenizer.bin"];

    /// <summary>
    /// Writes the source files, with their bytes as read, into <paramref name="directory"/> under the names Load looks for (a file read as
    /// <c>TokenizerPath = "…/gpt2-tiny.json"</c> is saved as tokenizer.json). Another tokenizer's file
    /// there that <see cref="Load"/> looks for first would be read in place of these, and a tokenizer_config.json beside
    /// a tokenizer.json sets its special tokens: both are deleted (a save into the folder of another model).
    /// </summary>
    internal void CopyTo(string directory)
    {
        var written = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (_, name, content) in _files)
        {
            var target = Path.Combine(directory, name);
            // Left alone when it already holds these bytes (a save into the folder the tokenizer was read from).
            if (!File.Exists(target) || !File.ReadAllBytes(target).AsSpan().SequenceEqual(content)) AtomicFile.Write(target, fs => fs.Write(content));
            written.Add(name);
        }
        RemoveShadowingFiles(directory, written);
    }

    /// <summary>
    /// Deletes from <paramref name="directory"/> the files of another tokenizer that <see cref="Load"/> would read in place
    /// of the one whose files are <paramref name="written"/> (names as saved), or with it; none when no tokenizer file was written.
    /// </summary>
    internal static void RemoveShadowingFiles(string directory, IReadOnlySet<string> written)
    {
        int entry = Array.FindIndex(FolderEntryFiles, written.Contains);
        foreach (var name in FolderEntryFiles.Take(Math.Max(entry, 0))) File.Delete(Path.Combine(directory, name));
        if (written.Contains("tokenizer.json") && !written.Contains(TokenizerConfigFile)) File.Delete(Path.Combine(directory, TokenizerConfigFile));
    }

    private static void RequireFile(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Tokenizer file not found: {path}", path);
    }
}
