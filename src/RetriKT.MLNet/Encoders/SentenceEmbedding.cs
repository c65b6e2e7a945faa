using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Text;

namespace RetriKT.MLNet.Encoders;

/// <summary>
/// Estimator for <see cref="SentenceEmbeddingTransformer"/>: a pretrained sentence encoder
/// (<see cref="ManagedBertSentenceEncoder"/>) as a pipeline step, so queries for a
/// <see cref="KnowledgeRetrieverEstimator"/> come from the encoder that keyed the store, checked.
/// </summary>
/// <remarks>
/// <para>Input: a text column (and a second one for sentence pairs: one BERT input, <c>[CLS] a [SEP] b [SEP]</c>, as the
/// store's keys of pairs are). Output: a known-size vector of Single of the encoder's dimension, carrying the
/// encoder's fingerprint as its <see cref="EncoderProvenance.AnnotationName"/> annotation. A knowledge retriever
/// reading this column refuses a store keyed by another encoder, in Fit and in the loaded model.</para>
/// <para>Nothing is trained: Fit checks the columns. The transformer saves the encoder itself (weights, vocabulary,
/// pooling, length limit, normalisation) in model.zip, so a served model does not depend on the package or directory
/// it came from; all-MiniLM-L6-v2 adds about 90 MB.</para>
/// <example>
/// <code>
/// var encoder = ManagedBertSentenceEncoder.Load(PretrainedEncoderPackage.MiniLM);
/// var keyed = store.WithEmbeddings(encoder);
/// var pipeline = mlContext.RetriKT().SentenceEmbedding(encoder)                 // Text → Features (+ fingerprint)
///     .Append(mlContext.RetriKT().KnowledgeRetriever(keyed, k: 8));            // Features → neighbours
/// var model = pipeline.Fit(data);
/// </code>
/// </example>
/// </remarks>
public sealed class SentenceEmbeddingEstimator : IEstimator<SentenceEmbeddingTransformer>
{
    /// <summary>Defaults that the catalog's overload shares (C# optional parameters need constants).</summary>
    internal static class Defaults
    {
        public const string InputColumnName = "Text", OutputColumnName = "Features";
    }

    private readonly IHostEnvironment _env;
    private readonly ManagedBertSentenceEncoder _encoder;
    private readonly string _output, _input;
    private readonly string? _input2;

    internal SentenceEmbeddingEstimator(IHostEnvironment env, ManagedBertSentenceEncoder encoder, string outputColumnName, string inputColumnName, string? secondInputColumnName)
    {
        _env = env ?? throw new ArgumentNullException(nameof(env));
        _encoder = encoder ?? throw new ArgumentNullException(nameof(encoder));
        ArgumentException.ThrowIfNullOrWhiteSpace(outputColumnName);
        ArgumentException.ThrowIfNullOrWhiteSpace(inputColumnName);
        if (secondInputColumnName is not null) ArgumentException.ThrowIfNullOrWhiteSpace(secondInputColumnName);
        (_output, _input, _input2) = (outputColumnName, inputColumnName, secondInputColumnName);
    }

    /// <summary>Checks the text columns and returns the transformer (nothing is learned).</summary>
    public SentenceEmbeddingTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var transformer = new SentenceEmbeddingTransformer(_env, _encoder, _output, _input, _input2);
        transformer.GetOutputSchema(input.Schema);
        return transformer;
    }

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        TextColumns.Require(inputSchema, _input);
        if (_input2 is not null) TextColumns.Require(inputSchema, _input2);
        var columns = inputSchema.ToDictionary(c => c.Name);
        // The encoder's fingerprint annotation, as the transformer's column carries it.
        columns[_output] = SchemaShapes.Vector(_output, NumberDataViewType.Single,
            annotations: SchemaShapes.Annotations(SchemaShapes.Scalar(EncoderProvenance.AnnotationName, TextDataViewType.Instance)));
        return new SchemaShape(columns.Values);
    }
}

/// <summary>
/// Embeds text with a pretrained sentence encoder held as state (saved inside model.zip); the output column carries the
/// encoder's fingerprint (<see cref="EncoderProvenance"/>). See <see cref="SentenceEmbeddingEstimator"/>.
/// </summary>
public sealed class SentenceEmbeddingTransformer : RowMappingTransformer
{
    // Format versions: 0x00010001 the encoder (pairs with token types all 0); 0x00010002 adds the pair token types (PairSegments);
    // 0x00010003 the pair cut (PairTruncation; before it, BERT's reference).
    internal static readonly ModelFormat Format = new("RKTSNTEM", 0x00010003, 0x00010001, "RetriKTSentenceEmbedding");
    private const uint PairSegmentsVersion = 0x00010002;
    private const uint PairTruncationVersion = 0x00010003;
    private const string WeightsPart = "Encoder.bin";

    private readonly IHostEnvironment _env;

    internal SentenceEmbeddingTransformer(IHostEnvironment env, ManagedBertSentenceEncoder encoder, string output, string input, string? input2)
    {
        _env = env;
        Encoder = encoder;
        OutputColumnName = output;
        InputColumnName = input;
        SecondInputColumnName = input2;
    }

    /// <summary>The encoder.</summary>
    public ManagedBertSentenceEncoder Encoder { get; }
    /// <summary>Input text column.</summary>
    public string InputColumnName { get; }
    /// <summary>Second input text column (sentence pairs) or null.</summary>
    public string? SecondInputColumnName { get; }
    /// <summary>Output column of embeddings.</summary>
    public string OutputColumnName { get; }

    private protected override RowMapping CreateMapping(DataViewSchema inputSchema) => new Mapping(this, inputSchema);

    private protected override void SaveModel(ModelSaveContext ctx) => ModelWriter.Save(ctx, Format, w =>
    {
        var parts = Encoder.Parts;
        w.WriteString(OutputColumnName);
        w.WriteString(InputColumnName);
        w.WriteStringOrNull(SecondInputColumnName);
        w.WriteString(Encoder.Source);
        w.Writer.Write((int)Encoder.Pooling);
        w.Writer.Write(Encoder.Normalize);
        w.Writer.Write(Encoder.MaxTokens);
        w.Writer.Write(Encoder.Vocabulary.LowerCase);
        w.WriteStream("Vocabulary.txt", Encoder.Vocabulary.WriteTokens);
        parts.Weights.WriteShape(w.Writer);
        w.WriteStream(WeightsPart, parts.Weights.Write);
        w.Writer.Write((int)parts.Segments);
        w.Writer.Write((int)parts.Truncation);
    });

    internal static SentenceEmbeddingTransformer Load(ModelReader r)
    {
        const string where = "SentenceEmbedding in model.zip";
        var rd = r.Reader;
        string output = r.ReadString(), input = r.ReadString();
        string? input2 = r.ReadStringOrNull();
        string source = r.ReadString();
        int pooling = rd.ReadInt32();
        if (!Enum.IsDefined((BertPooling)pooling)) throw new InvalidDataException($"{where}: unknown pooling {pooling}.");
        bool normalize = rd.ReadBoolean();
        int maxTokens = rd.ReadInt32();
        bool lowerCase = rd.ReadBoolean();
        string[] tokens = [];
        r.ReadStream("Vocabulary.txt", s => tokens = WordPieceVocabulary.ReadTokens(s, where));
        var weights = BertWeights.ReadPart(r, WeightsPart, $"{where}, {WeightsPart} (saved from {source})");
        var segments = BertEncoderSource.ReadSegments(r, PairSegmentsVersion, where);
        var truncation = BertEncoderSource.ReadTruncation(r, PairTruncationVersion, where);
        var parts = new BertEncoderSource(weights, WordPieceVocabulary.FromTokens(tokens, lowerCase, $"{where} vocabulary"), (BertPooling)pooling)
        {
            Segments = segments,
            Truncation = truncation,
        };
        ManagedBertSentenceEncoder encoder;
        try { encoder = ManagedBertSentenceEncoder.FromParts(parts, normalize, maxTokens); }
        catch (ArgumentException e) { throw new InvalidDataException($"{where}: {e.Message}", e); }
        return new SentenceEmbeddingTransformer(r.Environment, encoder, output, input, input2);
    }

    private sealed class Mapping : RowMapping
    {
        private readonly SentenceEmbeddingTransformer _parent;
        private readonly TextInputs _texts;

        public Mapping(SentenceEmbeddingTransformer parent, DataViewSchema schema) : base(schema)
        {
            _parent = parent;
            _texts = new TextInputs(schema, parent.InputColumnName, parent.SecondInputColumnName);
            var annotations = new DataViewSchema.Annotations.Builder();
            string fingerprint = parent.Encoder.Fingerprint;
            annotations.Add(EncoderProvenance.AnnotationName, TextDataViewType.Instance, (ref ReadOnlyMemory<char> value) => value = fingerprint.AsMemory());
            Outputs = [new OutputColumn(parent.OutputColumnName, new VectorDataViewType(NumberDataViewType.Single, parent.Encoder.Dimension), annotations.ToAnnotations())];
        }

        public override IReadOnlyList<OutputColumn> Outputs { get; }
        public override IReadOnlyList<DataViewSchema.Column> Dependencies => _texts.Dependencies;

        public override Delegate?[] CreateGetters(DataViewRow input, Func<int, bool> isActive)
        {
            var read = _texts.Reader(input);
            var encoder = _parent.Encoder;
            var embedding = new float[encoder.Dimension];
            long cachedPosition = long.MinValue;
            string? cachedText = null, cachedText2 = null;
            ValueGetter<VBuffer<float>> getter = (ref VBuffer<float> dst) =>
            {
                // A retriever after this step reads the column too: a caller that also reads it (a prediction engine whose
                // output class holds Features) ran the whole encoder a second time for the same row.
                var (text, text2) = read();
                if (cachedPosition != input.Position || cachedText != text || cachedText2 != text2)
                {
                    // A text the tokenizer reads as nothing encodes as [CLS] [SEP], and a pair without its second text as
                    // [CLS] a [SEP] [SEP]: queries unlike every entry the store was keyed with, which a retriever after this
                    // step answered with neighbours all the same.
                    _texts.RequireTexts(text, text2, input.Position, "SentenceEmbedding");
                    encoder.Encode([(text, text2)], embedding);
                    (cachedPosition, cachedText, cachedText2) = (input.Position, text, text2);
                }
                var editor = VBufferEditor.Create(ref dst, encoder.Dimension);
                embedding.CopyTo(editor.Values);
                dst = editor.Commit();
            };
            return [getter];
        }
    }
}
