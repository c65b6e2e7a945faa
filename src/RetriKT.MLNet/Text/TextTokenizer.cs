using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Common;

namespace RetriKT.MLNet.Text;

/// <summary>
/// Estimator for <see cref="TextTokenizingTransformer"/>: turns text (and an optional second text, for sentence-pair
/// tasks) into WordPiece token ids <c>[CLS] a [SEP] (b [SEP])</c>, truncated to <see cref="Options.MaxLength"/>.
/// <c>Fit</c> loads the vocabulary from <see cref="Options.VocabularyPath"/> or builds one from the training texts.
/// </summary>
/// <remarks>
/// Input: <c>Text</c> (string), optional <c>Text2</c> (string). Output: <c>TokenIds</c> (variable-length vector of Int32).
/// </remarks>
public sealed class TextTokenizingEstimator : IEstimator<TextTokenizingTransformer>
{
    /// <summary>Options of the tokenizer.</summary>
    public sealed class Options
    {
        /// <summary>Defaults that the catalog's simple overload shares (C# optional parameters need constants).</summary>
        internal static class Defaults
        {
            public const string InputColumnName = "Text", OutputColumnName = "TokenIds";
            public const int MaxLength = 128;
        }

        /// <summary>Column with the (first) text. Default "Text".</summary>
        public string InputColumnName = Defaults.InputColumnName;
        /// <summary>Column with the second text of a sentence pair, or null. Default null.</summary>
        public string? SecondInputColumnName;
        /// <summary>Output column of token ids. Default "TokenIds".</summary>
        public string OutputColumnName = Defaults.OutputColumnName;
        /// <summary>Maximum number of ids including special tokens; longer inputs are truncated. Default 128.</summary>
        public int MaxLength = Defaults.MaxLength;
        /// <summary>A WordPiece vocab.txt to use; null builds a vocabulary from the training texts. Default null.</summary>
        public string? VocabularyPath;
        /// <summary>Lower-case and strip accents before tokenizing. Default true.</summary>
        public bool LowerCase = true;
        /// <summary>Largest vocabulary built from data. Default 8000.</summary>
        public int MaxVocabularySize = 8000;
        /// <summary>Minimum count for a whole word to enter a built vocabulary. Default 2.</summary>
        public int MinWordFrequency = 2;

        /// <summary>A copy of every setting.</summary>
        internal Options Copy() => (Options)MemberwiseClone();
    }

    private readonly IHostEnvironment _env;
    private readonly Options _options;

    internal TextTokenizingEstimator(IHostEnvironment env, Options options)
    {
        _env = env ?? throw new ArgumentNullException(nameof(env));
        // A copy, as ML.NET's estimators keep theirs: a later edit of the caller's object would change Fit unchecked.
        _options = options = (options ?? throw new ArgumentNullException(nameof(options))).Copy();
        if (string.IsNullOrWhiteSpace(options.InputColumnName)) throw new ArgumentException("InputColumnName must be set.", nameof(options));
        if (string.IsNullOrWhiteSpace(options.OutputColumnName)) throw new ArgumentException("OutputColumnName must be set.", nameof(options));
        if (options.MaxLength < 3) throw new ArgumentOutOfRangeException(nameof(options), $"MaxLength must be at least 3 (room for [CLS], one token and [SEP]), found {options.MaxLength}.");
        if (options.SecondInputColumnName is not null && PairRoomError(options.MaxLength) is { } noRoom)
            throw new ArgumentOutOfRangeException(nameof(options), noRoom);
    }

    /// <summary>
    /// Why <paramref name="maxLength"/> ids leave a sentence pair no token of each text, or null: below 5 ([CLS] a [SEP] b
    /// [SEP]) a pair keeps no token of one text or of both (3: [CLS] [SEP] [SEP] for every pair), so every row would encode
    /// alike, or as its second text alone, without a word. Asked here and by the student trainer, which builds its tokenizer itself.
    /// </summary>
    internal static string? PairRoomError(int maxLength) => maxLength >= 5 ? null
        : $"MaxLength must be at least 5 for sentence pairs (room for [CLS], a token of each text and two [SEP]), found {maxLength}.";

    /// <summary>Loads or builds the vocabulary and returns the fitted transformer.</summary>
    public TextTokenizingTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var text = TextColumns.Require(input.Schema, _options.InputColumnName);
        var text2 = _options.SecondInputColumnName is null ? (DataViewSchema.Column?)null : TextColumns.Require(input.Schema, _options.SecondInputColumnName);
        WordPieceVocabulary vocabulary;
        if (_options.VocabularyPath is not null)
            vocabulary = WordPieceVocabulary.Load(_options.VocabularyPath, _options.LowerCase);
        else
        {
            var texts = TextColumns.Read(input, text).Concat(text2 is { } c ? TextColumns.Read(input, c) : []);
            vocabulary = WordPieceVocabulary.Build(texts, _options.MaxVocabularySize, _options.MinWordFrequency, _options.LowerCase);
        }
        new ComponentHost(_env, nameof(TextTokenizingEstimator)).Info($"Tokenizer vocabulary: {vocabulary.Count} tokens.");
        return new TextTokenizingTransformer(_env, _options.InputColumnName, _options.SecondInputColumnName,
            _options.OutputColumnName, _options.MaxLength, vocabulary);
    }

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        TextColumns.Require(inputSchema, _options.InputColumnName);
        if (_options.SecondInputColumnName is not null) TextColumns.Require(inputSchema, _options.SecondInputColumnName);
        var columns = inputSchema.ToDictionary(c => c.Name);
        columns[_options.OutputColumnName] = SchemaShapes.Vector(_options.OutputColumnName, NumberDataViewType.Int32, variableSize: true);
        return new SchemaShape(columns.Values);
    }
}

/// <summary>Maps text to WordPiece ids with a vocabulary held as state (saved inside model.zip).</summary>
public sealed class TextTokenizingTransformer : RowMappingTransformer
{
    internal static readonly ModelFormat Format = new("RKTTOKNZ", 0x00010001, 0x00010001, "RetriKTTextTokenizer");

    private readonly IHostEnvironment _env;

    internal TextTokenizingTransformer(IHostEnvironment env, string input, string? input2, string output, int maxLength, WordPieceVocabulary vocabulary)
    {
        _env = env;
        InputColumnName = input;
        SecondInputColumnName = input2;
        OutputColumnName = output;
        MaxLength = maxLength;
        Vocabulary = vocabulary;
    }

    /// <summary>Input text column.</summary>
    public string InputColumnName { get; }
    /// <summary>Second input text column (sentence pairs) or null.</summary>
    public string? SecondInputColumnName { get; }
    /// <summary>Output column of token ids.</summary>
    public string OutputColumnName { get; }
    /// <summary>Maximum number of ids per row.</summary>
    public int MaxLength { get; }
    /// <summary>The vocabulary.</summary>
    public WordPieceVocabulary Vocabulary { get; }

    /// <summary>Token ids of one input, exactly as the output column holds them.</summary>
    public int[] Encode(string text, string? text2 = null) => Encode(text, text2, out _);

    /// <summary>
    /// Whether <paramref name="text"/> holds anything the tokenizer reads as part of a word. It drops whitespace, control,
    /// format (zero-width) and private-use characters, and lower-casing strips combining marks, so a text of only those
    /// encodes as an empty one; a service can refuse it as empty rather than answer it.
    /// </summary>
    public static bool HasWordCharacter(string? text) => text is not null && BertPreTokenizer.HasWordCharacter(text);

    internal int[] Encode(string text, string? text2, out bool truncated)
    {
        int room = MaxLength - (text2 is null ? 2 : 3);
        // Neither part keeps more than the room, and the cut below from room + 1 tokens passes through the same lengths
        // as from the whole text (and still says it truncated): a long text is read only as far as that.
        var a = Vocabulary.Encode(text, Math.Max(room, 0) + 1);
        var b = text2 is null ? null : Vocabulary.Encode(text2, Math.Max(room, 0) + 1);
        int lengthA = a.Count, lengthB = b?.Count ?? 0;
        truncated = lengthA + lengthB > room;
        // Trim the longer part first, the first part on a tie: where both parts are longer than half an odd room, the second
        // keeps the extra token, where Hugging Face's fast tokenizer gives it to the longer part and BERT's reference to the
        // first (so the cut differs from both by that token when the first part is the longer). Saved students tokenize
        // this way, so the rule stays (changing it would change their inputs).
        while (lengthA + lengthB > room)
        {
            if (lengthA >= lengthB) lengthA--; else lengthB--;
        }
        var ids = new int[lengthA + lengthB + (b is null ? 2 : 3)];
        int at = 0;
        ids[at++] = Vocabulary.ClsId;
        for (int i = 0; i < lengthA; i++) ids[at++] = a[i];
        ids[at++] = Vocabulary.SepId;
        if (b is not null)
        {
            for (int i = 0; i < lengthB; i++) ids[at++] = b[i];
            ids[at++] = Vocabulary.SepId;
        }
        return ids;
    }

    private protected override RowMapping CreateMapping(DataViewSchema inputSchema) => new Mapping(this, inputSchema);

    private protected override void SaveModel(ModelSaveContext ctx) => ModelWriter.Save(ctx, Format, w =>
    {
        w.WriteString(InputColumnName);
        w.WriteStringOrNull(SecondInputColumnName);
        w.WriteString(OutputColumnName);
        w.Writer.Write(MaxLength);
        w.Writer.Write(Vocabulary.LowerCase);
        w.WriteStream("Vocabulary.txt", Vocabulary.WriteTokens);
    });

    internal static TextTokenizingTransformer Load(ModelReader r)
    {
        var input = r.ReadString();
        var input2 = r.ReadStringOrNull();
        var output = r.ReadString();
        int maxLength = r.Reader.ReadInt32();
        bool lowerCase = r.Reader.ReadBoolean();
        string[] tokens = [];
        r.ReadStream("Vocabulary.txt", s => tokens = WordPieceVocabulary.ReadTokens(s, "Tokenizer vocabulary in model.zip"));
        return new TextTokenizingTransformer(r.Environment, input, input2, output, maxLength,
            WordPieceVocabulary.FromTokens(tokens, lowerCase, "model.zip tokenizer vocabulary"));
    }

    private sealed class Mapping : RowMapping
    {
        private readonly TextTokenizingTransformer _parent;
        private readonly TextInputs _texts;

        public Mapping(TextTokenizingTransformer parent, DataViewSchema schema) : base(schema)
        {
            _parent = parent;
            _texts = new TextInputs(schema, parent.InputColumnName, parent.SecondInputColumnName);
            Outputs = [new OutputColumn(parent.OutputColumnName, new VectorDataViewType(NumberDataViewType.Int32))];
        }

        public override IReadOnlyList<OutputColumn> Outputs { get; }
        public override IReadOnlyList<DataViewSchema.Column> Dependencies => _texts.Dependencies;

        public override Delegate?[] CreateGetters(DataViewRow input, Func<int, bool> isActive)
        {
            var read = _texts.Reader(input);
            bool warned = false;
            ValueGetter<VBuffer<int>> getter = (ref VBuffer<int> dst) =>
            {
                var (text, text2) = read();
                var ids = _parent.Encode(text, text2, out bool truncated);
                if (truncated && !warned)
                {
                    warned = true;
                    new ComponentHost(_parent._env, nameof(TextTokenizingTransformer)).Warning(
                        $"Row {input.Position}: text is longer than MaxLength = {_parent.MaxLength} tokens and was truncated (further truncations on this cursor are not logged).");
                }
                var editor = VBufferEditor.Create(ref dst, ids.Length);
                ids.AsSpan().CopyTo(editor.Values);
                dst = editor.Commit();
            };
            return [getter];
        }
    }
}
