using Microsoft.ML;
using Microsoft.ML.Runtime;
using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Text;

// One registration per persisted component. ML.NET finds these by the loader signature stored in model.zip and calls
// the static Create of the registered loader type (a small class here, so components never see ModelLoadContext;
// ML.NET looks the factory up by the name "Create", hence one class per component).
[assembly: LoadableClass(typeof(TextTokenizingTransformer), typeof(Loaders.TextTokenizer), null, typeof(SignatureLoadModel),
    "RetriKT Text Tokenizer", "RetriKTTextTokenizer")]
[assembly: LoadableClass(typeof(SoftPromptTransformer), typeof(Loaders.SoftPrompt), null, typeof(SignatureLoadModel),
    "RetriKT Soft Prompt PPO", "RetriKTSoftPromptPpo")]
[assembly: LoadableClass(typeof(KnowledgeExtractorTransformer), typeof(Loaders.KnowledgeExtractor), null, typeof(SignatureLoadModel),
    "RetriKT Knowledge Extractor", "RetriKTKnowledgeExtract")]
[assembly: LoadableClass(typeof(RetriKT.MLNet.Student.RetrievalClassifierTransformer), typeof(Loaders.RetrievalClassifier), null, typeof(SignatureLoadModel),
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

    internal static class SoftPrompt
    {
        private static SoftPromptTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
            => SoftPromptTransformer.Load(ModelReader.Open(env, ctx, SoftPromptTransformer.Format));
    }

    internal static class KnowledgeExtractor
    {
        private static KnowledgeExtractorTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
            => KnowledgeExtractorTransformer.Load(ModelReader.Open(env, ctx, KnowledgeExtractorTransformer.Format));
    }

    internal static class RetrievalClassifier
    {
        private static RetriKT.MLNet.Student.RetrievalClassifierTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
            => RetriKT.MLNet.Student.RetrievalClassifierTransformer.Load(ModelReader.Open(env, ctx, RetriKT.MLNet.Student.RetrievalClassifierTransformer.Format));
    }
}
