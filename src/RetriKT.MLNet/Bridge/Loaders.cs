using Microsoft.ML;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Text;

// One registration per persisted runtime component (the training assembly registers its own in
// src/RetriKT.MLNet.Training/Bridge/TrainingLoaders.cs). ML.NET finds these by the loader signature stored in model.zip and calls
// the static Create of the registered loader type (a small class here, so components never see ModelLoadContext;
// ML.NET looks the factory up by the name "Create", hence one class per component).
[assembly: LoadableClass(typeof(TextTokenizingTransformer), typeof(Loaders.TextTokenizer), null, typeof(SignatureLoadModel),
    "RetriKT Text Tokenizer", "RetriKTTextTokenizer")]
[assembly: LoadableClass(typeof(KnowledgeRetrieverTransformer), typeof(KnowledgeRetrieverLoader), null, typeof(SignatureLoadModel),
    "RetriKT Knowledge Retriever", "RetriKTRetriever")]
[assembly: LoadableClass(typeof(RetriKT.MLNet.Encoders.SentenceEmbeddingTransformer), typeof(SentenceEmbeddingLoader), null, typeof(SignatureLoadModel),
    "RetriKT Sentence Embedding", "RetriKTSentenceEmbedding")]
[assembly: LoadableClass(typeof(RetriKT.MLNet.Student.RetrievalClassifierTransformer), typeof(RetrievalClassifierLoader), null, typeof(SignatureLoadModel),
    "RetriKT Retrieval Classifier", "RetriKTRetrievalClsf")]

namespace RetriKT.MLNet.Bridge;

/// <summary>Static factories ML.NET's component catalog calls to restore our transformers from model.zip.</summary>
internal static class Loaders
{
    internal static class TextTokenizer
    {
        private static TextTokenizingTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
            => TextTokenizingTransformer.Load(ModelReader.Open(env, ctx, TextTokenizingTransformer.Format));
    }
}

/// <summary>ML.NET looks up a method named <c>Create</c> by parameters, so each component needs its own loader class.</summary>
internal static class KnowledgeRetrieverLoader
{
    private static KnowledgeRetrieverTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
        => KnowledgeRetrieverTransformer.Load(ModelReader.Open(env, ctx, KnowledgeRetrieverTransformer.Format));
}

/// <summary>
/// ML.NET finds a loader by a static method named <c>Create(IHostEnvironment, ModelLoadContext)</c>; C# cannot overload
/// by return type, so each further component gets its own small loader class.
/// </summary>
internal static class RetrievalClassifierLoader
{
    private static RetriKT.MLNet.Student.RetrievalClassifierTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
        => RetriKT.MLNet.Student.RetrievalClassifierTransformer.Load(ModelReader.Open(env, ctx, RetriKT.MLNet.Student.RetrievalClassifierTransformer.Format));
}

internal static class SentenceEmbeddingLoader
{
    private static RetriKT.MLNet.Encoders.SentenceEmbeddingTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
        => RetriKT.MLNet.Encoders.SentenceEmbeddingTransformer.Load(ModelReader.Open(env, ctx, RetriKT.MLNet.Encoders.SentenceEmbeddingTransformer.Format));
}
